//! Lab guests whose RAM is memory as real fleets have it: zero pages,
//! text-like pages zstd shrinks, random pages it cannot ([`Mix`]).

/// What a lab guest's RAM holds, page by page: a share of zero pages, a
/// share of text-like pages (words and spaces, which zstd shrinks about
/// fourfold), the rest random bytes (which it cannot shrink). Which page is
/// which is drawn from a hash of its index ([`Mix::kind`]), so a test knows
/// the truth page by page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub zero: f64,
    pub text: f64,
}

/// A page of a [`Mix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Zero,
    Text,
    Random,
}

impl Mix {
    /// The kind of page `index` (the 4 KiB page at byte `index × 4096` of
    /// the RAM file).
    pub fn kind(&self, index: u64) -> PageKind {
        let u = (splitmix(index) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.zero {
            PageKind::Zero
        } else if u < self.zero + self.text {
            PageKind::Text
        } else {
            PageKind::Random
        }
    }

    /// Page `index`'s 4096 bytes.
    pub fn page(&self, index: u64, out: &mut [u8; 4096]) {
        const WORDS: [&str; 32] = [
            "the",
            "evacuation",
            "of",
            "a",
            "data",
            "center",
            "moves",
            "every",
            "virtual",
            "machine",
            "over",
            "wide",
            "area",
            "network",
            "before",
            "power",
            "runs",
            "out",
            "and",
            "memory",
            "pages",
            "are",
            "sent",
            "in",
            "rounds",
            "while",
            "guest",
            "keeps",
            "writing",
            "to",
            "them",
            "again",
        ];
        let mut x = splitmix(index ^ 0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        match self.kind(index) {
            PageKind::Zero => out.fill(0),
            PageKind::Random => {
                for chunk in out.chunks_mut(8) {
                    chunk.copy_from_slice(&next().to_le_bytes());
                }
            }
            PageKind::Text => {
                let mut at = 0;
                while at < out.len() {
                    let r = next();
                    let word = WORDS[(r % 32) as usize].as_bytes();
                    for &b in word.iter().chain(if r & 0x700 == 0 { b"\n" } else { b" " }) {
                        if at < out.len() {
                            out[at] = b;
                            at += 1;
                        }
                    }
                }
            }
        }
    }

    /// How many of the first `pages` pages are zero pages.
    pub fn zero_pages(&self, pages: u64) -> u64 {
        (0..pages).filter(|&i| self.kind(i) == PageKind::Zero).count() as u64
    }
}

/// SplitMix64's output for `x`: a well-mixed 64-bit hash.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
