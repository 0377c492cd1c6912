//! An attempt from its start to its watch: what it asks of QEMU
//! ([`Setup`]), the destination started and listening, the source
//! prepared, `migrate`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use evac_model::{Connections, MigrationParams, Mode};
use evac_qmp::{MigrationCapability, MigrationInfo, MigrationParameters, Qmp, TlsEndpoint};
use tokio::sync::mpsc;

use super::progress::{Happened, PostcopyReady, Progress};
use super::watch::{Landing, Watch};
use super::{bandwidth, expand_template, qmp_err, AttemptCtx, Control, DstProcess, TLS_CREDS_ID};

/// The zstd level a compressing migration uses: QEMU's default, the level
/// `evac plan` measures the compression ratio at.
const ZSTD_LEVEL: u32 = 1;

/// How this attempt migrates, decided before either end is touched.
pub(super) struct Setup {
    /// `ctx.params`, over one connection when postcopy needs it.
    params: MigrationParams,
    postcopy: PostcopyReady,
    /// `postcopy-ram` on at both ends.
    postcopy_ram: bool,
    /// zstd on the multifd channels.
    compress: bool,
    multifd: bool,
    /// `multifd-compression`, for a multifd migration.
    compression: Option<String>,
}

impl Setup {
    async fn decide(ctx: &AttemptCtx) -> Result<Setup, String> {
        let mut params = ctx.params;
        let postcopy = postcopy_readiness(ctx, &mut params).await?;
        let postcopy_ram = postcopy == PostcopyReady::Ready;
        // QEMU compresses only multifd channels: a compressing migration is
        // a multifd one, of one channel if that is all it was given. The
        // controller has made `auto` `zstd` or `none` by now.
        let compress = params.compression == evac_model::Compression::Zstd && !postcopy_ram;
        let multifd = params.connections > Connections::ONE || compress;
        let compression = multifd.then(|| if compress { "zstd" } else { "none" }.to_owned());
        Ok(Setup {
            params,
            postcopy,
            postcopy_ram,
            compress,
            multifd,
            compression,
        })
    }

    /// The capabilities both ends share.
    fn capabilities(&self) -> Vec<(MigrationCapability, bool)> {
        let mut caps = vec![(MigrationCapability::Events, true)];
        if self.multifd {
            caps.push((MigrationCapability::Multifd, true));
        }
        if self.postcopy_ram {
            caps.push((MigrationCapability::PostcopyRam, true));
        }
        caps
    }
}

/// Whether the attempt may go to postcopy: wanted when the migration is
/// one, or may become one. A postcopy migration goes over one connection
/// (`params` changed so).
pub(super) async fn postcopy_readiness(
    ctx: &AttemptCtx,
    params: &mut MigrationParams,
) -> Result<PostcopyReady, String> {
    if params.mode != Mode::Postcopy && !params.allow_postcopy {
        return Ok(PostcopyReady::Refused(format!(
            "vm {}: postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)",
            ctx.vm
        )));
    }
    Ok(match crate::postcopy::refusal(&ctx.src, &ctx.vm).await {
        Some(why) if params.mode == Mode::Postcopy => return Err(why),
        Some(why) => PostcopyReady::Refused(why),
        // QEMU 7.2 refuses `postcopy-ram` with `multifd`: a postcopy
        // migration goes over one connection; one that only may switch
        // keeps its connections and cannot.
        None if params.connections > Connections::ONE && params.mode != Mode::Postcopy => PostcopyReady::Refused(format!(
            "vm {}: postcopy unavailable: this migration uses {} multifd connections, and QEMU does not combine postcopy with multifd",
            ctx.vm, params.connections
        )),
        None => {
            if params.connections > Connections::ONE {
                ctx.log(format!(
                    "postcopy over one connection, not {}: QEMU does not combine postcopy with multifd",
                    params.connections
                ));
                params.connections = Connections::ONE;
            }
            PostcopyReady::Ready
        }
    })
}

/// The attempt from its start to its end: the destination started and
/// listening, the source sending, then watched.
pub(super) async fn drive(
    ctx: &AttemptCtx,
    sock: &std::path::Path,
    control: &mut mpsc::UnboundedReceiver<Control>,
    progress: &Arc<Mutex<Progress>>,
    dst: &mut DstProcess,
) -> Result<MigrationInfo, String> {
    let setup = Setup::decide(ctx).await?;
    // 1. A fresh destination process.
    let dst_qmp = start_destination(ctx, sock, dst).await?;
    let dst_events = dst_qmp.events();
    // 2. The destination listens.
    let uri = listen(ctx, &setup, &dst_qmp).await?;
    // 3. The source.
    let src_events = ctx.src.events();
    prepare_source(ctx, &setup).await?;
    // When we paused the guest on the source: QEMU's `downtime` only counts
    // from its own stop for stop-and-copy, not from ours.
    let mut paused_at: Option<tokio::time::Instant> = None;
    if setup.params.mode == Mode::Offline {
        ctx.src.stop().await.map_err(qmp_err("stop (offline)"))?;
        paused_at = Some(tokio::time::Instant::now());
        progress.lock().unwrap().on(Happened::Paused);
    }
    ctx.src.migrate(&uri).await.map_err(qmp_err("migrate"))?;
    let since = (
        tokio::time::Instant::now(),
        ctx.src.peer_pid().and_then(crate::netns_tx_bytes),
    );
    progress.lock().unwrap().on(Happened::Migrating {
        postcopy: setup.postcopy,
        since,
    });
    // 4. Watch it.
    Watch {
        ctx,
        progress,
        dst_qmp: &dst_qmp,
        paused_at,
        landing: Landing::Sending,
    }
    .run(control, dst, src_events, dst_events)
    .await
}

/// Starts the destination QEMU for `ctx`, listening for QMP at `sock`
/// (journaled before the start: found again through it after a restart of
/// evac), and connects to it.
pub(super) async fn start_destination(
    ctx: &AttemptCtx,
    sock: &std::path::Path,
    dst: &mut DstProcess,
) -> Result<Qmp, String> {
    let mut command = expand_template(&ctx.dst_host, &ctx.vm);
    if command.is_empty() {
        return Err(format!("host {}: empty incoming_command", ctx.dst_host.name));
    }
    let program = command.remove(0);
    command.extend(ctx.qemu_args.iter().cloned());
    command.extend([
        "-incoming".to_owned(),
        "defer".to_owned(),
        "-qmp".to_owned(),
        format!("unix:{},server=on,wait=off", sock.display()),
        "-display".to_owned(),
        "none".to_owned(),
        "-nodefaults".to_owned(),
    ]);
    let _ = std::fs::remove_file(sock);
    let log_path = ctx.run_dir.join(format!("dst-{}-{}.log", ctx.vm, ctx.attempt));
    let log_file =
        std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let child = tokio::process::Command::new(&program)
        .args(&command)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        // Its own process group: a Ctrl-C at the terminal must not kill VMs.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let child = dst.child.insert(child);
    tokio::select! {
        qmp = Qmp::connect_retry(sock.to_str().unwrap_or_default(), Duration::from_secs(15)) => {
            qmp.map_err(qmp_err("destination QMP"))
        }
        status = child.wait() => {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(format!("destination QEMU exited at start ({}): {}", status.map(|s| s.to_string()).unwrap_or_default(), tail.trim()))
        }
    }
}

/// The destination's capabilities, credentials and parameters, then
/// `migrate-incoming`: the URI the source sends to.
pub(super) async fn listen(ctx: &AttemptCtx, setup: &Setup, dst_qmp: &Qmp) -> Result<String, String> {
    dst_qmp
        .migrate_set_capabilities(&setup.capabilities())
        .await
        .map_err(qmp_err("destination capabilities"))?;
    if let Some(tls) = &ctx.tls {
        dst_qmp
            .add_tls_creds_x509(TLS_CREDS_ID, &tls.dst_dir.to_string_lossy(), TlsEndpoint::Server)
            .await
            .map_err(|e| {
                format!(
                    "TLS credentials of destination host {} (tls_dir {}): {e}",
                    ctx.dst_host.name,
                    tls.dst_dir.display()
                )
            })?;
    }
    if setup.multifd || ctx.tls.is_some() {
        dst_qmp
            .migrate_set_parameters(&MigrationParameters {
                multifd_channels: setup.multifd.then_some(setup.params.connections.get()),
                tls_creds: ctx.tls.as_ref().map(|_| TLS_CREDS_ID.to_owned()),
                multifd_compression: setup.compression.clone(),
                multifd_zstd_level: setup.compress.then_some(ZSTD_LEVEL),
                ..Default::default()
            })
            .await
            .map_err(qmp_err("destination parameters"))?;
    }
    let address = ctx
        .dst_host
        .migration_address
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());
    let host_part = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.clone()
    };
    // Port 0: QEMU binds a free port itself, in its own network namespace
    // (where `address` exists; evac's may not have it), with no window for
    // another process to take it between a probe and the bind. The port it
    // bound is in its `query-migrate` reply.
    dst_qmp
        .migrate_incoming(&format!("tcp:{host_part}:0"))
        .await
        .map_err(qmp_err("migrate-incoming"))?;
    let listening = dst_qmp
        .query_migrate()
        .await
        .map_err(qmp_err("query-migrate on the destination"))?;
    let port = listening.listening_port().ok_or_else(|| {
        format!(
            "the destination did not report the port it listens on for {address} \
             (query-migrate socket-address: {:?})",
            listening.socket_address
        )
    })?;
    Ok(format!("tcp:{host_part}:{port}"))
}

/// The source's capabilities, credentials and parameters for this attempt.
pub(super) async fn prepare_source(ctx: &AttemptCtx, setup: &Setup) -> Result<(), String> {
    let src = &ctx.src;
    let params = &setup.params;
    let mut caps = setup.capabilities();
    caps.push((MigrationCapability::AutoConverge, params.auto_converge));
    if !setup.multifd {
        caps.push((MigrationCapability::Multifd, false));
    }
    // Off unless wanted: a capability set by an earlier attempt stays set.
    if !setup.postcopy_ram {
        caps.push((MigrationCapability::PostcopyRam, false));
    }
    src.migrate_set_capabilities(&caps)
        .await
        .map_err(qmp_err("source capabilities"))?;
    if let Some(tls) = &ctx.tls {
        // A previous attempt's object (same id) may be there: replace it,
        // the certificates may have been renewed since.
        let _ = src.object_del(TLS_CREDS_ID).await;
        src.add_tls_creds_x509(TLS_CREDS_ID, &tls.src_dir.to_string_lossy(), TlsEndpoint::Client)
            .await
            .map_err(|e| {
                format!(
                    "TLS credentials of the source host (tls_dir {}): {e}",
                    tls.src_dir.display()
                )
            })?;
    }
    src.migrate_set_parameters(&MigrationParameters {
        max_bandwidth: Some(bandwidth(params.max_bandwidth)),
        downtime_limit: Some(params.downtime_limit.as_millis() as u64),
        multifd_channels: Some(params.connections.get()),
        tls_creds: ctx.tls.as_ref().map(|_| TLS_CREDS_ID.to_owned()),
        tls_hostname: ctx
            .tls
            .as_ref()
            .map(|tls| tls.hostname.clone().unwrap_or_default()),
        // Set on every multifd attempt: an earlier attempt's setting stays.
        multifd_compression: setup.compression.clone(),
        multifd_zstd_level: setup.compress.then_some(ZSTD_LEVEL),
        ..Default::default()
    })
    .await
    .map_err(qmp_err("source parameters"))
}
