//! The journal on disk: a line appended and flushed (`fsync`) per entry, a
//! torn last line cut off before appending, and the file read back (bounded
//! lines, a torn last line ignored) into the state it leaves, which decides
//! whether a run may start or resume. Apart from the replay (`super::replay`),
//! which works on entries and knows no file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::{replay, unix_ms, Entry, Replay, State, MAX_LINE};

/// An open journal, appended to.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Starts a new journal at `path` (an earlier finished one is kept
    /// beside it as `journal-<unix ms>.jsonl`).
    pub fn create(path: &Path) -> anyhow::Result<Journal> {
        if path.exists() {
            let ms = unix_ms();
            let kept = path.with_file_name(format!("journal-{ms}.jsonl"));
            std::fs::rename(path, &kept)
                .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", path.display()))?;
        }
        Self::open(path)
    }

    /// Appends to an existing journal (resuming). A torn last line (a crash
    /// while it was written) is cut off first, or the next entry would be
    /// glued to it.
    pub fn open(path: &Path) -> anyhow::Result<Journal> {
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot open the journal {}: {e}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(cannot)?;
        let whole = whole_lines_len(&file).map_err(cannot)?;
        if whole < file.metadata().map_err(cannot)?.len() {
            file.set_len(whole).map_err(cannot)?;
            file.sync_data().map_err(cannot)?;
        }
        Ok(Journal {
            file,
            path: path.to_owned(),
        })
    }

    /// Writes `entry` as one line and flushes it to disk.
    pub fn append(&mut self, entry: &Entry) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| anyhow::anyhow!("cannot write the journal {}: {e}", self.path.display()))
    }
}

/// The length of `file` up to and including its last newline.
fn whole_lines_len(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    let (mut offset, mut whole) = (0u64, 0u64);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(whole);
        }
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            whole = offset + last as u64 + 1;
        }
        let n = buf.len();
        offset += n as u64;
        reader.consume(n);
    }
}

/// Before a run: reads the journal at `path` and decides. A plain run
/// (`resume` false) refuses a run dir holding an unfinished run; `--resume`
/// needs one. Returns what to resume, if anything.
pub fn prepare(path: &Path, resume: bool) -> anyhow::Result<Option<Replay>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match (inspect(path)?, resume) {
        (State::Unfinished(replay), true) => Ok(Some(replay)),
        (State::Unfinished(_), false) => anyhow::bail!(
            "run dir {} holds an unfinished run ({}): evac was stopped before it ended; \
             finish it with `evac run INVENTORY --resume`",
            dir.display(),
            path.display()
        ),
        (State::None | State::Finished, true) => anyhow::bail!(
            "--resume: no unfinished run in {} (no journal, or its run finished)",
            dir.display()
        ),
        (State::None | State::Finished, false) => Ok(None),
    }
}

/// Reads the journal at `path`.
pub fn inspect(path: &Path) -> anyhow::Result<State> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::None),
        Err(e) => anyhow::bail!("cannot read the journal {}: {e}", path.display()),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| anyhow::anyhow!("cannot read the journal {}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            anyhow::bail!("{}:{number}: a line longer than {MAX_LINE} bytes", path.display());
        }
        if line.last() != Some(&b'\n') {
            // Torn by a crash while it was written: never flushed, never acted on.
            break;
        }
        let entry: Entry = serde_json::from_slice(&line)
            .map_err(|e| anyhow::anyhow!("{}:{number}: not a journal entry: {e}", path.display()))?;
        entries.push(entry);
    }
    replay(&entries).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
