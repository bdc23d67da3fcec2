//! Trims a torn tail off SurrealKV's write-ahead log before the datastore opens it.
//!
//! A process killed while appending to the WAL can leave part of a record at the end of the
//! newest segment. SurrealKV 0.21 replays up to it and stops, but does not cut it off: the
//! segment is reopened for appending, so the next run's commits (each fsynced and
//! acknowledged) land after the torn bytes. At the following start those bytes sit in the
//! middle of the segment, replay reports corruption, and SurrealKV's repair truncates the
//! segment there, discarding every acknowledged commit after it. Cutting the torn tail off
//! before SurrealKV opens the segment keeps every append on a record boundary.
//!
//! The framing (SurrealKV's `wal` module): 32 KiB blocks; each physical record is a 7-byte
//! header (CRC-32 of type and data, big-endian; length, big-endian u16; type) and its data,
//! never crossing a block; fewer than 7 bytes left in a block are zero padding. A logical
//! record is `Full`, or `First`, `Middle`..., `Last`. Type 0 marks a zero-filled rest of
//! block, type 9 a compression setting.
//!
//! Only a tail is ever removed: if anything that checks out as a record follows the first bad
//! byte, the damage is not a torn append, and the segment is left alone. SurrealKV's own repair
//! of such a segment would drop every record after the damage, and it does so by renaming a
//! rewritten copy over the segment its writer already holds open, so that run's commits would go
//! to a deleted file. authstore refuses to start instead ([`Damage`]); the operator accepts the
//! loss explicitly ([`WalRepair`]), and then [`cut`] truncates the segment in place, keeping a
//! copy of what it removes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

const BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;
/// Beyond this many bytes after the first bad one, do not go looking for later records:
/// that much is not a torn append.
const MAX_TAIL: usize = 4 << 20;

const EMPTY: u8 = 0;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const SET_COMPRESSION: u8 = 9;

/// What [`trim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No WAL yet, or it ends on a record boundary.
    Clean,
    /// `removed` bytes of an unfinished record were cut off the end of `segment`.
    Trimmed { segment: PathBuf, removed: u64 },
    /// The segment is damaged before its end; left as it is.
    DamagedInside(Damage),
}

/// Damage before the end of a segment: not a torn append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// The first byte that is not part of a valid record.
    pub at: u64,
    /// Where the last complete record before it ends: where [`cut`] truncates.
    pub intact_end: u64,
    /// The segment's length when it was checked.
    pub len: u64,
}

/// The operator's acceptance of losing what follows one damage: `SEGMENT@OFFSET`, the
/// segment's file name and [`Damage::at`], as the refusal prints them. Naming the damage means
/// an acceptance left in place accepts nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRepair {
    segment: String,
    at: u64,
}

impl WalRepair {
    /// The acceptance that names `damage`.
    pub fn of(damage: &Damage) -> WalRepair {
        let segment = damage.segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        WalRepair { segment, at: damage.at }
    }

    pub fn accepts(&self, damage: &Damage) -> bool {
        *self == WalRepair::of(damage)
    }
}

impl FromStr for WalRepair {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("--wal-repair takes SEGMENT@OFFSET as the refusal to start printed it, not {text:?}");
        let (segment, at) = text.trim().rsplit_once('@').ok_or_else(bad)?;
        let at = at.parse().map_err(|_| bad())?;
        if segment.is_empty() || segment.contains(['/', '\\']) {
            return Err(bad());
        }
        Ok(WalRepair { segment: segment.to_string(), at })
    }
}

impl fmt::Display for WalRepair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.segment, self.at)
    }
}

/// Checks the newest segment in `wal_dir` and cuts off a torn tail.
pub fn trim(wal_dir: &Path) -> std::io::Result<Outcome> {
    let Some(segment) = newest_segment(wal_dir)? else { return Ok(Outcome::Clean) };
    let mut bytes = Vec::new();
    File::open(&segment)?.read_to_end(&mut bytes)?;
    let scan = scan(&bytes);
    if scan.good_end == bytes.len() {
        return Ok(Outcome::Clean);
    }
    if records_after(&bytes, scan.stop) {
        return Ok(Outcome::DamagedInside(Damage {
            segment,
            at: scan.stop as u64,
            intact_end: scan.good_end as u64,
            len: bytes.len() as u64,
        }));
    }
    let file = OpenOptions::new().write(true).open(&segment)?;
    file.set_len(scan.good_end as u64)?;
    file.sync_all()?;
    Ok(Outcome::Trimmed { segment, removed: (bytes.len() - scan.good_end) as u64 })
}

/// Truncates the damaged segment at the end of its last intact record, after writing the bytes
/// it removes to `keep` (created, with its directory). Returns how many bytes it removed.
pub fn cut(damage: &Damage, keep: &Path) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    File::open(&damage.segment)?.read_to_end(&mut bytes)?;
    let from = usize::try_from(damage.intact_end).map_err(std::io::Error::other)?;
    if bytes.len() as u64 != damage.len || from > bytes.len() {
        return Err(std::io::Error::other(format!(
            "{} changed since it was checked; nothing was cut",
            damage.segment.display()
        )));
    }
    let removed = &bytes[from..];
    if let Some(parent) = keep.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut copy = File::create(keep)?;
    copy.write_all(removed)?;
    copy.sync_all()?;
    if let Some(parent) = keep.parent() {
        File::open(parent)?.sync_all()?;
    }
    let file = OpenOptions::new().write(true).open(&damage.segment)?;
    file.set_len(damage.intact_end)?;
    file.sync_all()?;
    Ok(removed.len() as u64)
}

fn newest_segment(wal_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let path = entry?.path();
        let number =
            path.extension().filter(|x| *x == "wal").and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
        if let Some(number) = number
            && newest.as_ref().is_none_or(|(n, _)| number > *n)
        {
            newest = Some((number, path));
        }
    }
    Ok(newest.map(|(_, path)| path))
}

struct Scan {
    /// Where the last complete logical record ends.
    good_end: usize,
    /// The first byte that is not part of a valid record (the end, when all are valid).
    stop: usize,
}

/// Walks the segment as SurrealKV's reader does.
fn scan(bytes: &[u8]) -> Scan {
    let mut pos = 0;
    let mut good_end = 0;
    let mut in_record = false;
    while pos < bytes.len() {
        let block_left = BLOCK - pos % BLOCK;
        if block_left < HEADER {
            // Padding, if the file goes on; a torn header, if it ends here.
            if pos + block_left > bytes.len() {
                break;
            }
            pos += block_left;
            continue;
        }
        let Some(header) = bytes.get(pos..pos + HEADER) else { break };
        let crc = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let kind = header[6];
        let data_at = pos + HEADER;
        if kind == EMPTY {
            let rest = &bytes[data_at.min(bytes.len())..(pos + block_left).min(bytes.len())];
            if !rest.iter().all(|b| *b == 0) {
                break;
            }
            pos += block_left;
            continue;
        }
        if HEADER + length > block_left {
            break;
        }
        let Some(data) = bytes.get(data_at..data_at + length) else { break };
        if kind == SET_COMPRESSION {
            pos = data_at + length;
            if !in_record {
                good_end = pos;
            }
            continue;
        }
        let sequence_ok = match kind {
            FULL | FIRST => !in_record,
            MIDDLE | LAST => in_record,
            _ => false,
        };
        if !sequence_ok || checksum(kind, data) != crc {
            break;
        }
        pos = data_at + length;
        in_record = matches!(kind, FIRST | MIDDLE);
        if !in_record {
            good_end = pos;
        }
    }
    Scan { good_end, stop: pos.min(bytes.len()) }
}

/// Whether a checksummed `Full` or `First` record starts anywhere after `stop`.
fn records_after(bytes: &[u8], stop: usize) -> bool {
    if bytes.len().saturating_sub(stop) > MAX_TAIL {
        return true;
    }
    (stop + 1..bytes.len().saturating_sub(HEADER)).any(|at| {
        let header = &bytes[at..at + HEADER];
        let kind = header[6];
        if kind != FULL && kind != FIRST {
            return false;
        }
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let crc = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        length > 0 && bytes.get(at + HEADER..at + HEADER + length).is_some_and(|data| checksum(kind, data) == crc)
    })
}

fn checksum(kind: u8, data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(data);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = checksum(kind, data).to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(data);
        out
    }

    fn segment(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000003.wal"), b"older").unwrap();
        let path = dir.path().join("00000000000000000007.wal");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_log_ending_on_a_record_boundary_is_left_alone() {
        let mut bytes = record(FULL, b"one");
        bytes.extend(record(FIRST, b"two-a"));
        bytes.extend(record(LAST, b"two-b"));
        let (dir, path) = segment(&bytes);
        assert_eq!(trim(dir.path()).unwrap(), Outcome::Clean);
        assert_eq!(std::fs::read(path).unwrap(), bytes);
    }

    #[test]
    fn a_partial_header_is_cut_off() {
        let good = record(FULL, b"one");
        let mut bytes = good.clone();
        bytes.extend([0x13, 0x37, 0x00]);
        let (dir, path) = segment(&bytes);
        assert_eq!(trim(dir.path()).unwrap(), Outcome::Trimmed { segment: path.clone(), removed: 3 });
        assert_eq!(std::fs::read(path).unwrap(), good);
    }

    #[test]
    fn a_record_cut_short_or_missing_its_last_fragment_is_cut_off() {
        let good = record(FULL, b"one");
        for torn in [record(FULL, b"two")[..8].to_vec(), record(FIRST, b"two-a")] {
            let mut bytes = good.clone();
            bytes.extend(&torn);
            let (dir, path) = segment(&bytes);
            assert!(matches!(trim(dir.path()).unwrap(), Outcome::Trimmed { .. }));
            assert_eq!(std::fs::read(path).unwrap(), good);
        }
    }

    #[test]
    fn padding_and_block_boundaries_are_followed() {
        // Fill the first block so that 5 bytes are left: padding, then a record in block 2.
        let first = record(FULL, &vec![7u8; BLOCK - HEADER - 5]);
        let mut bytes = first.clone();
        bytes.extend([0u8; 5]);
        bytes.extend(record(FULL, b"second block"));
        let (dir, _) = segment(&bytes);
        assert_eq!(trim(dir.path()).unwrap(), Outcome::Clean);
    }

    #[test]
    fn damage_followed_by_records_is_not_a_tail_and_stays() {
        let mut bytes = record(FULL, b"one");
        bytes.extend([0xff, 0xff, 0xff]);
        bytes.extend(record(FULL, b"appended after the damage"));
        let (dir, path) = segment(&bytes);
        let Outcome::DamagedInside(damage) = trim(dir.path()).unwrap() else { panic!("damage") };
        assert_eq!(damage, Damage { segment: path.clone(), at: 10, intact_end: 10, len: bytes.len() as u64 });
        assert_eq!(std::fs::read(path).unwrap(), bytes);
    }

    #[test]
    fn an_accepted_damage_is_cut_in_place_and_what_is_cut_is_kept() {
        let mut bytes = record(FULL, b"one");
        bytes.extend(record(FIRST, b"two-a"));
        let intact = record(FULL, b"one").len();
        let damaged_at = bytes.len();
        bytes.extend([0xff, 0xff, 0xff]);
        bytes.extend(record(FULL, b"appended after the damage"));
        let (dir, path) = segment(&bytes);
        let Outcome::DamagedInside(damage) = trim(dir.path()).unwrap() else { panic!("damage") };
        // The half-written record before the damage goes too: the cut ends a whole record.
        assert_eq!((damage.at, damage.intact_end), (damaged_at as u64, intact as u64));
        let accept: WalRepair = format!("00000000000000000007.wal@{damaged_at}").parse().unwrap();
        assert!(accept.accepts(&damage));
        assert_eq!(accept, WalRepair::of(&damage));
        assert!(!format!("00000000000000000007.wal@{}", damaged_at + 1).parse::<WalRepair>().unwrap().accepts(&damage));
        assert!(!format!("00000000000000000003.wal@{damaged_at}").parse::<WalRepair>().unwrap().accepts(&damage));

        // Writers of the file keep appending to the same file: it is cut, not replaced.
        let held = OpenOptions::new().append(true).open(&path).unwrap();
        let keep = dir.path().join("cut").join("kept");
        assert_eq!(cut(&damage, &keep).unwrap(), (bytes.len() - intact) as u64);
        assert_eq!(std::fs::read(&keep).unwrap(), bytes[intact..]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes[..intact]);
        assert_eq!(trim(dir.path()).unwrap(), Outcome::Clean);
        (&held).write_all(&record(FULL, b"next")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), intact + record(FULL, b"next").len());
    }

    #[test]
    fn a_cut_refuses_a_segment_that_changed_since_the_check() {
        let mut bytes = record(FULL, b"one");
        bytes.extend([0xff, 0xff, 0xff]);
        bytes.extend(record(FULL, b"appended after the damage"));
        let (dir, path) = segment(&bytes);
        let Outcome::DamagedInside(damage) = trim(dir.path()).unwrap() else { panic!("damage") };
        let mut grown = bytes.clone();
        grown.extend(record(FULL, b"more"));
        std::fs::write(&path, &grown).unwrap();
        assert!(cut(&damage, &dir.path().join("kept")).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), grown);
    }

    #[test]
    fn an_acceptance_is_a_segment_name_and_an_offset() {
        for bad in ["", "7", "00000000000000000007.wal", "x.wal@", "@12", "x.wal@-1", "../x.wal@1", "a.wal@1x"] {
            assert!(bad.parse::<WalRepair>().is_err(), "{bad:?}");
        }
        let ok: WalRepair = " 00000000000000000007.wal@1234 ".parse().unwrap();
        assert_eq!(ok.to_string(), "00000000000000000007.wal@1234");
    }

    #[test]
    fn no_wal_directory_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(trim(&dir.path().join("wal")).unwrap(), Outcome::Clean);
    }
}
