/*
 * evac dirtying guest: a 64 KiB x86 "BIOS" image that replaces the firmware
 * (`-bios`) of a lab VM and dirties memory at a chosen rate.
 *
 * The image is mapped at 0xffff0000 (the last 64 KiB below 4 GiB); the CPU
 * starts in real mode at 0xfffffff0 (CS base 0xffff0000, IP 0xfff0). It
 * switches to 32-bit protected mode with flat segments, calibrates the TSC
 * against PIT channel 2 (port I/O, polled), then writes into one 4 KiB page
 * of the working set after another, each page `interval` TSC ticks after
 * the previous one, wrapping around the working set.
 *
 * Between pages it sleeps (`hlt`) instead of polling the TSC, so a dirtying
 * VM costs its host a little CPU rather than a whole core: the local APIC's
 * timer, periodic at about 1 kHz (its rate measured against the TSC), wakes
 * it, and it writes every page that has come due since (a burst of
 * rate / 1000 pages). Its interrupt handler never returns with `iret` (a
 * protected-mode `iret` fails under the paravirtual KVM's instruction
 * emulator on the lab's machine): it acknowledges the interrupt, resets the
 * stack and jumps back into the loop, whose state lives in registers the
 * handler does not touch. The timer state migrates with the VM, so the
 * guest keeps dirtying at its destination.
 *
 * A curve: up to three more regions, each with its own rate, are paced
 * the same way from the same wake-ups (their state in low RAM, as the
 * loop's registers are region 0's). Each region is a ring written one page
 * after another, so within any window of t seconds it dirties
 * min(pages, rate * t) pages; the regions are disjoint, so the memory
 * dirtied at least once within t is the sum over the regions: a concave
 * curve known from the parameters alone (a fast small region, a slow large
 * one: fast, then slowly).
 *
 * Parameters: the lab patches the block at offset 0 (see vm.rs).
 *
 * Built by crates/lab/build.rs with `as --32`, `ld -m elf_i386 -Ttext=0`
 * and `objcopy -O binary`: label values are offsets in the image.
 */
        .set BASE, 0xffff0000            /* where the image is mapped */
        .set VARS, 0x1000                /* scratch variables in low RAM */
        .set V_LIMIT, VARS + 0           /* catch-up limit, TSC ticks */
        .set V_START, VARS + 4           /* first byte of the working set */
        .set V_END, VARS + 8             /* one past its last byte */
        .set V_HZ_LO, VARS + 12          /* measured TSC Hz, low and high */
        .set V_HZ_HI, VARS + 16
        .set V_INTERVAL, VARS + 20       /* TSC ticks between two pages */
        .set V_REGIONS, VARS + 0x40      /* the extra regions' state, R_SIZE each */
        .set R_NEXT, 0                   /* next page to dirty */
        .set R_START, 4                  /* first byte */
        .set R_END, 8                    /* one past the last byte */
        .set R_INTERVAL, 12              /* TSC ticks between two pages; 0 = unused */
        .set R_DUE_LO, 16                /* when its next page is due */
        .set R_DUE_HI, 20
        .set R_SIZE, 32
        .set EXTRA, 3                    /* extra regions at most */
        .set FILL, 0x5a17e5ac            /* the fill pattern (lab.rs: DIRTY_FILL_PATTERN) */
        .set LATCH, 59659                /* PIT ticks in 50 ms (1193182 Hz) */
        .set IDT, 0x2000                 /* 256 gates of 8 bytes, in low RAM */
        .set STACK_TOP, 0x8000           /* the handler's stack, in low RAM */
        .set APIC, 0xfee00000            /* the local APIC's registers */
        .set APIC_TPR, APIC + 0x80
        .set APIC_EOI, APIC + 0xb0
        .set APIC_SVR, APIC + 0xf0
        .set APIC_LVT_TIMER, APIC + 0x320
        .set APIC_TIMER_INIT, APIC + 0x380
        .set APIC_TIMER_COUNT, APIC + 0x390
        .set APIC_TIMER_DIV, APIC + 0x3e0
        .set VECTOR, 0x20                /* the timer's interrupt vector */

        .code16
        .text
        .globl _start
_start:
/* ---- parameter block, offset 0 (32 bytes), little-endian ---- */
        .ascii "EVACDIRTYGUEST01"        /* 0: magic */
p_pages_per_sec:
        .long 0                          /* 16: pages to dirty per second; 0 = idle */
p_ws_start:
        .long 0                          /* 20: first byte of the working set (page aligned) */
p_ws_pages:
        .long 0                          /* 24: pages in the working set */
p_tsc_khz:
        .long 0                          /* 28: TSC kHz; 0 = calibrate with the PIT */
p_fill_end:
        .long 0                          /* 32: mark each page of [1 MiB, this) non-zero at boot; 0 = no fill */

        .org 0x40
p_extra:
        /* 64: EXTRA regions of 12 bytes: pages per second (0 = unused),
         * first byte (page aligned), pages; each disjoint from the others */
        .fill EXTRA * 3, 4, 0

        .org 0x80
gdt:
        .quad 0                          /* null */
        .quad 0x00cf9b000000ffff         /* 0x08: code, base 0, 4 GiB, 32-bit */
        .quad 0x00cf93000000ffff         /* 0x10: data, base 0, 4 GiB */
gdt_end:
gdt_desc:
        .word gdt_end - gdt - 1
        .long BASE + gdt
idt_desc:
        .word 256 * 8 - 1
        .long IDT

/* ---- real mode, reached from the reset vector ---- */
entry16:
        cli
        cld
        lgdtl %cs:gdt_desc
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $(BASE + entry32)

/* ---- 32-bit protected mode, flat ---- */
        .code32
entry32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs

        /* Optional fill: the first dword of every page from 1 MiB up to
         * p_fill_end gets a non-zero pattern, so anonymous RAM has no zero
         * page QEMU could skip (it sends a zero page as a flag, any other in
         * full); postcopy needs anonymous RAM, the lab's file-backed RAM is
         * random bytes instead. One dword a page, not all of them: this
         * lab's KVM emulates the guest's instructions one by one (`rep
         * stosl` over 128 MiB took 28 s). */
        movl BASE + p_fill_end, %ecx
        testl %ecx, %ecx
        jz nofill
        movl $0x100000, %edi
        movl $FILL, %eax
9:      cmpl %ecx, %edi
        jae nofill
        movl %eax, (%edi)
        addl $4096, %edi
        jmp 9b
nofill:
        movl BASE + p_pages_per_sec, %ecx
        testl %ecx, %ecx
        jz idle
        movl BASE + p_ws_pages, %eax
        testl %eax, %eax
        jz idle
        shll $12, %eax
        movl BASE + p_ws_start, %ebx
        movl %ebx, V_START
        addl %ebx, %eax
        movl %eax, V_END

        /* TSC ticks per second into edx:eax */
        movl BASE + p_tsc_khz, %eax
        testl %eax, %eax
        jz calibrate
        movl $1000, %edx
        mull %edx
        jmp have_hz

calibrate:
        /* PIT channel 2, mode 0 (interrupt on terminal count), gate on,
         * speaker off; its OUT is bit 5 of port 0x61. */
        inb $0x61, %al
        andb $0xfc, %al
        orb $0x01, %al
        outb %al, $0x61
        movb $0xb0, %al                  /* channel 2, lo/hi byte, mode 0, binary */
        outb %al, $0x43
        movb $(LATCH & 0xff), %al
        outb %al, $0x42
        movb $(LATCH >> 8), %al
        outb %al, $0x42
        rdtsc
        movl %eax, %esi
        movl %edx, %edi
1:      inb $0x61, %al
        testb $0x20, %al
        jz 1b
        rdtsc
        subl %esi, %eax
        sbbl %edi, %edx                  /* edx:eax = ticks in 50 ms */
        testl %edx, %edx
        jz 2f
        movl $0xffffffff, %eax           /* absurd: clamp */
2:      movl $20, %edx
        mull %edx                        /* edx:eax = ticks per second */

have_hz:
        movl %eax, V_HZ_LO
        movl %edx, V_HZ_HI
        /* interval = hz / pages_per_sec, clamped to 32 bits */
        cmpl %ecx, %edx
        jae 3f
        divl %ecx
        jmp 4f
3:      movl $0xffffffff, %eax
4:      movl %eax, V_INTERVAL
        movl %eax, %ebp
        /* catch-up limit: 100 ms of ticks (hz / 10), clamped to 32 bits */
        movl V_HZ_LO, %eax
        movl V_HZ_HI, %edx
        movl $10, %ecx
        cmpl %ecx, %edx
        jae 5f
        divl %ecx
        jmp 6f
5:      movl $0xffffffff, %eax
6:      movl %eax, V_LIMIT
        /* never let the limit be below one interval */
        cmpl %ebp, %eax
        jae 7f
        movl %ebp, V_LIMIT
7:
        /* The extra regions: interval = hz / pages_per_sec (clamped to 32
         * bits), next = start; their due times are set below with region
         * 0's. An unused region keeps interval 0. */
        xorl %ebx, %ebx                  /* ebx: region index */
        movl $(BASE + p_extra), %esi     /* esi: its parameters */
        movl $V_REGIONS, %edi            /* edi: its state */
20:     movl $0, R_INTERVAL(%edi)
        movl (%esi), %ecx                /* pages per second */
        testl %ecx, %ecx
        jz 22f
        movl 8(%esi), %eax               /* pages */
        testl %eax, %eax
        jz 22f
        shll $12, %eax
        movl 4(%esi), %edx
        movl %edx, R_START(%edi)
        movl %edx, R_NEXT(%edi)
        addl %edx, %eax
        movl %eax, R_END(%edi)
        movl V_HZ_LO, %eax
        movl V_HZ_HI, %edx
        cmpl %ecx, %edx
        jae 21f
        divl %ecx
        jmp 23f
21:     movl $0xffffffff, %eax
23:     movl %eax, R_INTERVAL(%edi)
22:     addl $12, %esi
        addl $R_SIZE, %edi
        incl %ebx
        cmpl $EXTRA, %ebx
        jb 20b

        /* ---- the wake-up timer: local APIC timer, periodic, ~1 ms ---- */
        /* Every gate of the IDT leads to `tick` (spurious and stray
         * interrupts too: it only acknowledges and resumes the loop). */
        movl $IDT, %edi
        movl $256, %ecx
9:      movl $(0x00080000 + tick), (%edi)    /* selector 0x08, offset 15..0 */
        movl $((BASE & 0xffff0000) + 0x8e00), 4(%edi) /* offset 31..16, 32-bit interrupt gate */
        addl $8, %edi
        loop 9b
        lidtl BASE + idt_desc
        movl $STACK_TOP, %esp
        movl $0, APIC_TPR
        movl $0x1ff, APIC_SVR            /* software-enable; spurious vector 0xff */
        movl $0x3, APIC_TIMER_DIV        /* divide by 16 */
        /* measure the timer against the TSC: one-shot, masked, 10 ms */
        movl $(0x10000 + VECTOR), APIC_LVT_TIMER
        movl $0xffffffff, APIC_TIMER_INIT
        movl V_HZ_LO, %eax
        movl V_HZ_HI, %edx
        movl $100, %ecx
        cmpl %ecx, %edx
        jae 10f
        divl %ecx                        /* eax: TSC ticks in 10 ms */
        jmp 11f
10:     movl $0xffffffff, %eax
11:     movl %eax, %ecx
        rdtsc
        movl %eax, %esi
12:     rdtsc
        subl %esi, %eax
        cmpl %ecx, %eax
        jb 12b
        movl APIC_TIMER_COUNT, %eax
        notl %eax                        /* timer ticks in 10 ms */
        xorl %edx, %edx
        movl $10, %ecx
        divl %ecx                        /* timer ticks in 1 ms */
        testl %eax, %eax
        jnz 13f
        movl $1, %eax
13:     movl $(0x20000 + VECTOR), APIC_LVT_TIMER   /* periodic, unmasked */
        movl %eax, APIC_TIMER_INIT

        rdtsc
        movl $V_REGIONS, %ebx            /* every extra region due from now */
24:     movl %eax, R_DUE_LO(%ebx)
        movl %edx, R_DUE_HI(%ebx)
        addl $R_SIZE, %ebx
        cmpl $(V_REGIONS + EXTRA * R_SIZE), %ebx
        jb 24b
        movl V_START, %ebx               /* ebx: next page to dirty */
        movl V_END, %ecx                 /* ecx: end of the working set */
        movl %eax, %esi                  /* edi:esi: when the next page is due */
        movl %edx, %edi

/* ---- the dirtying loop (interrupts off except in `hlt`) ---- */
due:
        rdtsc
        subl %esi, %eax
        sbbl %edi, %edx                  /* edx:eax = now - due */
        js sleep                         /* not due yet */
        testl %edx, %edx
        jnz resync
        cmpl V_LIMIT, %eax
        ja resync
dirty:
        incl (%ebx)
        addl $4096, %ebx
        cmpl %ecx, %ebx
        jb 8f
        movl V_START, %ebx
8:      addl %ebp, %esi
        adcl $0, %edi
        jmp due
resync:
        /* more than 100 ms behind (e.g. the VM was paused for a while):
         * restart the pacing from now instead of bursting to catch up. */
        addl %eax, %esi
        adcl %edx, %edi
        jmp dirty
sleep:
        /* Region 0 is up to date: the extra regions' due pages, then sleep.
         * Interrupts are off until `hlt`, so the stack is ours meanwhile. */
        pushl %ebx
        pushl %ecx
        pushl %esi
        pushl %edi
        movl $V_REGIONS, %ebx
extra_region:
        movl R_INTERVAL(%ebx), %ecx
        testl %ecx, %ecx
        jz extra_next
extra_due:
        rdtsc
        subl R_DUE_LO(%ebx), %eax
        sbbl R_DUE_HI(%ebx), %edx        /* edx:eax = now - due */
        js extra_next                    /* not due yet */
        testl %edx, %edx
        jnz extra_resync
        cmpl V_LIMIT, %eax
        jbe extra_dirty
extra_resync:
        /* over 100 ms behind: pace from now, as region 0 does */
        addl %eax, R_DUE_LO(%ebx)
        adcl %edx, R_DUE_HI(%ebx)
extra_dirty:
        movl R_NEXT(%ebx), %edi
        incl (%edi)
        addl $4096, %edi
        cmpl R_END(%ebx), %edi
        jb 25f
        movl R_START(%ebx), %edi
25:     movl %edi, R_NEXT(%ebx)
        addl %ecx, R_DUE_LO(%ebx)
        adcl $0, R_DUE_HI(%ebx)
        jmp extra_due
extra_next:
        addl $R_SIZE, %ebx
        cmpl $(V_REGIONS + EXTRA * R_SIZE), %ebx
        jb extra_region
        popl %edi
        popl %esi
        popl %ecx
        popl %ebx
        sti                              /* takes effect after `hlt` starts */
        hlt
        cli
        jmp due

/* The timer's interrupt (and any other): acknowledge, drop the frame,
 * resume the loop. Touches no register the loop keeps. */
tick:
        movl $0, APIC_EOI
        movl $STACK_TOP, %esp
        jmp due

idle:
        cli
        hlt
        jmp idle

/* ---- reset vector ---- */
        .code16
        .org 0xfff0
reset:
        jmp entry16
        .org 0x10000
