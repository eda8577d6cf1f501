//! The event log's storage: append-only segment files, and an index per application in
//! memory (sequence number -> segment, offset, length). The format and the rules (roll,
//! retention, deletion, compaction, recovery) are in docs/event-log.md.
//!
//! One writer ([`SegmentWriter`], on the log's writer thread) appends and keeps the
//! books; readers ([`Segments::read`]) look their records up under a read lock and read
//! them with positioned reads outside it, from file handles shared with the writer, so a
//! reader never waits for a `fdatasync`.

use super::LoggedEvent;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The first bytes of every segment file: the format and its version.
pub const MAGIC: &[u8; 8] = b"drgseg\x00\x01";
/// Bytes before a segment's first record.
const HEADER: u64 = MAGIC.len() as u64;
/// A record's frame before its body: `u32` body length, `u32` CRC-32.
const PREFIX: usize = 8;
/// The smallest body: a sequence number and three string lengths.
const MIN_BODY: usize = 8 + 4 + 4 + 4;
/// A larger body is taken for a corrupt length (events are at most a few hundred KiB).
const MAX_BODY: usize = 64 << 20;
/// The length of an absent string (no `applicationuid`, no `subject`).
const ABSENT: u32 = u32::MAX;
/// Most bytes one positioned read takes when records lie next to each other.
const MAX_SPAN: u64 = 4 << 20;
/// Migration writes in chunks of about this size.
const MIGRATION_CHUNK: usize = 4 << 20;
/// A segment is rewritten (compacted, or erased) in steps of about this many bytes of
/// records, one step between two groups: the commits waiting behind a step wait for
/// this much copying, not for a whole segment's. 128 KiB: the 99th percentile of the
/// commits waiting during a rewrite 1.3-2.4 ms against 12-16 ms with steps of 1 MiB,
/// for a rewrite taking 20-50 % longer, a sync per step (BENCHMARKS.md, "A segment's
/// rewrite in steps").
pub const REWRITE_STEP: usize = 128 << 10;
/// How many places of the index [`Segments::forget_all`] goes through at a time, holding
/// the index's lock: under 0.1 ms here (BENCHMARKS.md, "A segment's rewrite in steps").
const FORGET_STEP: usize = 16_384;
/// How many names of deleted applications the writer forgets for good between two
/// groups ([`SegmentWriter::forget_names_step`]): about 1 ms here (BENCHMARKS.md,
/// "What a deleted application's name leaves").
const NAMES_STEP: usize = 1024;
/// How long names wait to be forgotten after the floor could not be written.
const FLOOR_RETRY: std::time::Duration = std::time::Duration::from_secs(60);
/// The largest write buffer kept between groups.
const KEPT_BUFFER: usize = 8 << 20;
/// Zeros written ahead of the head's last record (never past the segment size): a group
/// that lands in them overwrites blocks the file already has, so its `fdatasync` writes
/// the data alone, not the file's size and block allocation too.
pub const PREALLOCATE: u64 = 1 << 20;

/// An event to append.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    pub application: &'a str,
    pub application_uid: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub json: &'a str,
}

/// Where a record is: segment id, offset of its frame, frame length (0: the record is
/// missing, lost to corruption); and whether it is an erased record's
/// [tombstone](encode_tombstone), kept for its sequence number and never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    erased: bool,
}

impl Loc {
    const MISSING: Loc = Loc {
        segment: 0,
        offset: 0,
        len: 0,
        erased: false,
    };

    fn is_missing(&self) -> bool {
        self.len == 0
    }

    /// Whether a reader gets a record here.
    fn is_readable(&self) -> bool {
        !self.is_missing() && !self.erased
    }

    /// Whether `other` is the same record, perhaps marked erased since (or not).
    fn is_record_of(&self, other: &Loc) -> bool {
        *self
            == Loc {
                erased: self.erased,
                ..*other
            }
    }
}

/// One application's records: `locs[i]` holds sequence number `first + i`. The last is
/// always present (retention keeps at least one), so it tells the last sequence number.
struct AppLog {
    first: u64,
    /// Where the name's numbers start: its first sequence number since it was last
    /// forgotten for good (what came before is another numbering, not missed events).
    since: u64,
    locs: VecDeque<Loc>,
    /// Which application of the name (`uid`) the records are of, in runs: each from its
    /// sequence number to the next run's (the first may start before `first`).
    uids: Vec<(u64, Option<Arc<str>>)>,
}

impl AppLog {
    fn new(first: u64) -> Self {
        Self {
            first,
            since: first,
            locs: VecDeque::new(),
            uids: Vec::new(),
        }
    }

    fn last(&self) -> u64 {
        self.first + self.locs.len() as u64 - 1
    }

    /// Where the run `n` of [`Self::uids`] ends (the sequence number after its last).
    fn run_end(&self, n: usize) -> u64 {
        self.uids
            .get(n + 1)
            .map_or(self.last() + 1, |(next, _)| *next)
    }

    /// Where the record `sequence` is, while it is kept.
    fn slot(&self, sequence: u64) -> Option<&Loc> {
        let i = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        self.locs.get(i)
    }

    fn slot_mut(&mut self, sequence: u64) -> Option<&mut Loc> {
        let i = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        self.locs.get_mut(i)
    }

    /// Notes the `uid` of the record `sequence`, the newest so far.
    fn note_uid(&mut self, sequence: u64, uid: Option<&str>) {
        if self.uids.last().is_none_or(|(_, u)| u.as_deref() != uid) {
            self.uids.push((sequence, uid.map(Arc::from)));
        }
    }

    /// Drops the runs of records no longer kept.
    fn prune_uids(&mut self) {
        let gone = self
            .uids
            .iter()
            .skip(1)
            .take_while(|(start, _)| *start <= self.first)
            .count();
        self.uids.drain(..gone);
    }
}

#[derive(Default)]
struct Index {
    apps: HashMap<String, AppLog>,
    /// Every segment the index may point into, open for positioned reads.
    files: HashMap<u64, Arc<File>>,
}

/// What [`Segments::forget`] leaves the writer to do.
#[derive(Default)]
struct Forgotten {
    /// Records readers no longer see, to take off the writer's books: by segment,
    /// how many and their bytes.
    released: HashMap<u64, (u64, u64)>,
    /// The deleted applications: every segment with records of theirs (its
    /// [`Residents`]), kept or not, is rewritten.
    uids: Vec<Arc<str>>,
    /// Their names: each one left without a record to read is forgotten for good
    /// (see [`SegmentWriter::forget_names_step`]).
    names: Vec<String>,
}

/// Which applications have records in a segment, kept or not (retention leaves the
/// bytes of the records it drops until their segment goes): `uid` -> name. Records that
/// carry no `uid` are noted too, under a key of their own per name ([`UNOWNED`] and the
/// name), so that their name is not forgotten while they are in the files.
type Residents = HashMap<Arc<str>, Arc<str>>;

/// What starts the [`Residents`] key of a name's records that carry no `uid`: no
/// application's `uid` does (the registry makes them, as UUIDs).
const UNOWNED: char = '\0';

/// What readers share with the writer.
pub struct Segments {
    index: RwLock<Index>,
    forgotten: Mutex<Forgotten>,
    /// Each segment's [`Residents`]; the writer keeps it, the sweep reads it.
    residents: Mutex<BTreeMap<u64, Residents>>,
    /// How many records each application keeps.
    retention: u64,
}

impl Segments {
    /// The records of an application after `after`, oldest first, at most `limit`.
    /// Records that cannot be read (an I/O error) end the batch before them, so that a
    /// reader going on from its last record misses none of them: an error when the
    /// first cannot. A record read whole that no longer matches its checksum (damaged
    /// on disk, and so for good) is skipped and logged.
    pub fn read(
        &self,
        application: &str,
        after: u64,
        limit: usize,
    ) -> io::Result<Vec<LoggedEvent>> {
        let mut wanted: Vec<Loc> = Vec::new();
        let mut files: Vec<(u64, Arc<File>)> = Vec::new();
        {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            let Some(log) = index.apps.get(application) else {
                return Ok(Vec::new());
            };
            let start = after.saturating_add(1).max(log.first);
            let skip = usize::try_from(start - log.first).unwrap_or(usize::MAX);
            if skip >= log.locs.len() {
                return Ok(Vec::new());
            }
            for loc in log.locs.range(skip..) {
                if wanted.len() >= limit {
                    break;
                }
                if !loc.is_readable() {
                    continue;
                }
                wanted.push(*loc);
                if !files.iter().any(|(id, _)| *id == loc.segment)
                    && let Some(file) = index.files.get(&loc.segment)
                {
                    files.push((loc.segment, file.clone()));
                }
            }
        }
        // records that lie next to each other are read together
        let mut found = Vec::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            let first = wanted[i];
            let mut end = first.offset + u64::from(first.len);
            let mut j = i + 1;
            while j < wanted.len()
                && wanted[j].segment == first.segment
                && wanted[j].offset == end
                && end - first.offset < MAX_SPAN
            {
                end += u64::from(wanted[j].len);
                j += 1;
            }
            let Some((_, file)) = files.iter().find(|(id, _)| *id == first.segment) else {
                i = j;
                continue;
            };
            let mut span = vec![0; (end - first.offset) as usize];
            match file.read_exact_at(&mut span, first.offset) {
                Ok(()) => {
                    let mut at = 0;
                    for loc in &wanted[i..j] {
                        let frame = &span[at..at + loc.len as usize];
                        at += loc.len as usize;
                        match decode(frame) {
                            Some(record) => found.push(record.to_event()),
                            None => tracing::warn!(
                                application,
                                segment = loc.segment,
                                offset = loc.offset,
                                "an event log record no longer matches its checksum; skipped"
                            ),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        application,
                        segment = first.segment,
                        error = %e,
                        "cannot read event log records"
                    );
                    if found.is_empty() {
                        return Err(e);
                    }
                    break;
                }
            }
            i = j;
        }
        Ok(found)
    }

    /// The sequence number of an application's newest record (0 before the first).
    pub fn last_sequence(&self, application: &str) -> u64 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.apps.get(application).map_or(0, AppLog::last)
    }

    /// The oldest sequence number an application's retention keeps now (1 while it has
    /// fewer records than that): a reader after a number below it lost records to
    /// retention; a gap above it is records erased or lost to damage.
    pub fn retained_from(&self, application: &str) -> u64 {
        (self.last_sequence(application) + 1)
            .saturating_sub(self.retention)
            .max(1)
    }

    /// Where an application's numbers start (0 for a name without records): its
    /// first sequence number since its name was last forgotten for good, as far as
    /// this process knows (at start, its oldest record found).
    pub fn since(&self, application: &str) -> u64 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.apps.get(application).map_or(0, |log| log.since)
    }

    /// How many names the index holds.
    pub fn names(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .apps
            .len()
    }

    /// The applications (`uid`s) that have records in the segments, kept or not, with
    /// their names.
    pub fn application_uids(&self) -> Vec<(String, String)> {
        let mut found: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        {
            // (the writer takes this lock with each commit: only reference counts here)
            let residents = self
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for of_segment in residents.values() {
                for (uid, name) in of_segment {
                    if !uid.starts_with(UNOWNED) && !found.contains_key(uid) {
                        found.insert(uid.clone(), name.clone());
                    }
                }
            }
        }
        found
            .into_iter()
            .map(|(uid, name)| (name.to_string(), uid.to_string()))
            .collect()
    }

    /// Drops the records of deleted applications, (name, `uid`) each; how many. Readers
    /// no longer see them once it returns (some of them before: it goes a step at a
    /// time). When a name's newest record is one of them, its place stays
    /// in the index, marked erased, to keep the name's sequence numbers going, and the
    /// writer rewrites it as a tombstone, unless the name is left with no record to
    /// read: then the writer forgets the name for good ([`SegmentWriter::forget_names_step`]).
    /// The writer erases every record of these
    /// applications from disk, those retention dropped too, as its housekeeping goes on
    /// ([`SegmentWriter::housekeeping`]), each segment once for them all.
    pub fn forget_all<'a>(&self, deleted: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
        self.forget_in_steps(deleted, &mut || {})
    }

    /// [`Self::forget_all`], calling `between_steps` after each step, with the index's
    /// lock let go.
    fn forget_in_steps<'a>(
        &self,
        deleted: impl IntoIterator<Item = (&'a str, &'a str)>,
        between_steps: &mut dyn FnMut(),
    ) -> usize {
        let mut batch = Forgotten::default();
        let removed = deleted
            .into_iter()
            .map(|(application, uid)| self.forget_into(application, uid, &mut batch, between_steps))
            .sum();
        // handed over at once: the writer rewrites each segment once for them all
        let mut forgotten = self
            .forgotten
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (segment, (records, bytes)) in batch.released {
            let of = forgotten.released.entry(segment).or_default();
            of.0 += records;
            of.1 += bytes;
        }
        forgotten.uids.extend(batch.uids);
        forgotten.names.extend(batch.names);
        removed
    }

    /// Forgets the records of `uid` of the name `application` (see [`Self::forget_all`])
    /// [`FORGET_STEP`] places at a time, so that appends and reads wait for a step, not
    /// for the whole application: readers may see its records go in parts. Those
    /// appended after the call began are left (the next sweep forgets them).
    fn forget_into(
        &self,
        application: &str,
        uid: &str,
        batch: &mut Forgotten,
        between_steps: &mut dyn FnMut(),
    ) -> usize {
        batch.uids.push(Arc::from(uid));
        // the runs of the uid's records, each `start..end`, as they are now
        let runs: Vec<(u64, u64)> = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            let Some(log) = index.apps.get(application) else {
                // (records retention dropped may still be on disk)
                return 0;
            };
            batch.names.push(application.to_owned());
            log.uids
                .iter()
                .enumerate()
                .filter(|(_, (_, of))| of.as_deref() == Some(uid))
                .map(|(n, (start, _))| (*start, log.run_end(n)))
                .collect()
        };
        // where the places forgotten end: what is appended after is left
        let forgotten_end = runs.last().map_or(0, |(_, end)| *end);
        let mut removed = 0;
        let mut released = Vec::new();
        for (start, end) in runs {
            let mut at = start;
            while at < end {
                {
                    let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
                    let Some(log) = index.apps.get_mut(application) else {
                        return removed;
                    };
                    let (first, last) = (log.first, log.last());
                    let from = at.max(first);
                    let to = end
                        .min(last + 1)
                        .min(from.saturating_add(FORGET_STEP as u64));
                    for sequence in from..to {
                        let slot = &mut log.locs[(sequence - first) as usize];
                        if !slot.is_readable() {
                            continue;
                        }
                        if sequence == last {
                            slot.erased = true;
                        } else {
                            released.push(*slot);
                            *slot = Loc::MISSING;
                        }
                    }
                    at = if to > from { to } else { end };
                }
                // counted by segment with the lock let go
                removed += released.len();
                for loc in released.drain(..) {
                    let of = batch.released.entry(loc.segment).or_default();
                    of.0 += 1;
                    of.1 += u64::from(loc.len);
                }
                between_steps();
            }
        }
        // the places now missing at the front go, a step at a time too
        loop {
            let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
            let Some(log) = index.apps.get_mut(application) else {
                return removed;
            };
            let gone = log
                .locs
                .iter()
                .take(FORGET_STEP)
                .take_while(|loc| loc.is_missing())
                .count();
            log.locs.drain(..gone);
            log.first += gone as u64;
            if gone < FORGET_STEP {
                // its runs forgotten are gone but the name's newest: the run before one
                // takes over its places, all missing now. A run of it that goes on past
                // them (records of it appended meanwhile) keeps those, for the next
                // sweep to forget.
                let ends: Vec<u64> = (0..log.uids.len()).map(|n| log.run_end(n)).collect();
                let mut n = 0;
                log.uids.retain_mut(|(start, of)| {
                    let end = ends[n];
                    n += 1;
                    if n == ends.len() || of.as_deref() != Some(uid) || *start >= forgotten_end {
                        return true;
                    }
                    if end > forgotten_end {
                        *start = forgotten_end;
                        return true;
                    }
                    false
                });
                log.prune_uids();
                return removed;
            }
        }
    }

    /// The sequence numbers an application keeps: (first, last), `None` before its first.
    #[cfg(test)]
    pub fn kept(&self, application: &str) -> Option<(u64, u64)> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index
            .apps
            .get(application)
            .map(|log| (log.first, log.last()))
    }
}

/// A decoded record, borrowing its frame.
struct Record<'a> {
    sequence: u64,
    application: &'a str,
    application_uid: Option<&'a str>,
    subject: Option<&'a str>,
    json: &'a str,
}

impl Record<'_> {
    /// Whether this is an erased record's tombstone ([`encode_tombstone`]); an event's
    /// JSON is never empty.
    fn is_tombstone(&self) -> bool {
        self.json.is_empty()
    }

    fn to_event(&self) -> LoggedEvent {
        LoggedEvent {
            application: self.application.to_owned(),
            application_uid: self.application_uid.map(str::to_owned),
            subject: self.subject.map(str::to_owned),
            sequence: self.sequence,
            json: self.json.to_owned(),
        }
    }
}

fn checksum(length: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(length);
    hasher.update(body);
    hasher.finalize()
}

fn put_str(buf: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => {
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value.as_bytes());
        }
        None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// Appends a record's frame to `buf`; its length.
fn encode(buf: &mut Vec<u8>, sequence: u64, draft: &Draft<'_>) -> u32 {
    let start = buf.len();
    buf.extend_from_slice(&[0; PREFIX]);
    buf.extend_from_slice(&sequence.to_le_bytes());
    put_str(buf, Some(draft.application));
    put_str(buf, draft.application_uid);
    put_str(buf, draft.subject);
    buf.extend_from_slice(draft.json.as_bytes());
    let body = (buf.len() - start - PREFIX) as u32;
    buf[start..start + 4].copy_from_slice(&body.to_le_bytes());
    let crc = checksum(&buf[start..start + 4], &buf[start + PREFIX..]);
    buf[start + 4..start + PREFIX].copy_from_slice(&crc.to_le_bytes());
    (buf.len() - start) as u32
}

/// Appends the frame of a tombstone, what is left of an erased record: its sequence
/// number and its application's name, nothing of its event; its length.
fn encode_tombstone(buf: &mut Vec<u8>, sequence: u64, application: &str) -> u32 {
    encode(
        buf,
        sequence,
        &Draft {
            application,
            application_uid: None,
            subject: None,
            json: "",
        },
    )
}

fn take_str<'a>(body: &mut &'a [u8]) -> Option<Option<&'a str>> {
    let (len, rest) = body.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len);
    if len == ABSENT {
        *body = rest;
        return Some(None);
    }
    let len = len as usize;
    if rest.len() < len {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    *body = rest;
    std::str::from_utf8(text).ok().map(Some)
}

fn decode_body(mut body: &[u8]) -> Option<Record<'_>> {
    let (sequence, rest) = body.split_first_chunk::<8>()?;
    let sequence = u64::from_le_bytes(*sequence);
    body = rest;
    let application = take_str(&mut body)??;
    let application_uid = take_str(&mut body)?;
    let subject = take_str(&mut body)?;
    let json = std::str::from_utf8(body).ok()?;
    Some(Record {
        sequence,
        application,
        application_uid,
        subject,
        json,
    })
}

/// A whole frame, checked.
fn decode(frame: &[u8]) -> Option<Record<'_>> {
    let (prefix, body) = frame.split_first_chunk::<PREFIX>()?;
    let len = u32::from_le_bytes(prefix[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(prefix[4..].try_into().ok()?);
    if len != body.len() || checksum(&prefix[..4], body) != crc {
        return None;
    }
    decode_body(body)
}

/// Why a scan stopped before the end of a segment.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Short,
    BadLength,
    BadChecksum,
    Undecodable,
}

impl Damage {
    fn as_str(self) -> &'static str {
        match self {
            Damage::Short => "a short record",
            Damage::BadLength => "an impossible record length",
            Damage::BadChecksum => "a checksum mismatch",
            Damage::Undecodable => "a record that does not decode",
        }
    }
}

/// Reads a segment's records in order, from after the header up to `size`; where the
/// valid records end and, when that is before `size`, why.
fn scan(
    file: &File,
    size: u64,
    mut each: impl FnMut(u64, u32, &Record<'_>),
) -> io::Result<(u64, Option<Damage>)> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.read_exact(&mut [0; HEADER as usize])?;
    let mut offset = HEADER;
    let mut body = Vec::new();
    loop {
        let remaining = size - offset;
        if remaining == 0 {
            return Ok((offset, None));
        }
        if remaining < PREFIX as u64 {
            return Ok((offset, Some(Damage::Short)));
        }
        let mut prefix = [0; PREFIX];
        reader.read_exact(&mut prefix)?;
        let len = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(prefix[4..].try_into().expect("4 bytes"));
        if !(MIN_BODY..=MAX_BODY).contains(&len) {
            return Ok((offset, Some(Damage::BadLength)));
        }
        if (len as u64) > remaining - PREFIX as u64 {
            return Ok((offset, Some(Damage::Short)));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        if checksum(&prefix[..4], &body) != crc {
            return Ok((offset, Some(Damage::BadChecksum)));
        }
        let Some(record) = decode_body(&body) else {
            return Ok((offset, Some(Damage::Undecodable)));
        };
        let frame = (PREFIX + len) as u32;
        each(offset, frame, &record);
        offset += u64::from(frame);
    }
}

/// Adds to `newest` the sequence number of each application's newest whole record
/// among the bytes of `file` from `from` to `to`, a damaged stretch that is not read
/// (each offset is tried as a frame's start), so that the sequence numbers of records
/// lost to damage are not given again.
fn salvage_sequences(
    file: &File,
    from: u64,
    to: u64,
    newest: &mut HashMap<String, u64>,
    residents: &mut Residents,
) -> io::Result<()> {
    let mut bytes = vec![0; usize::try_from(to - from).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, from)?;
    let mut at = 0;
    while at + PREFIX <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + PREFIX + len;
        if (MIN_BODY..=MAX_BODY).contains(&len)
            && end <= bytes.len()
            && let Some(record) = decode(&bytes[at..end])
        {
            let seen = newest.entry(record.application.to_owned()).or_default();
            *seen = (*seen).max(record.sequence);
            // (what a sealed segment keeps past its damage is on disk until it goes)
            // (a tombstone holds nothing of an application, and is counted for nothing)
            if !record.is_tombstone() {
                note_resident(residents, record.application_uid, record.application);
            }
            at = end;
        } else {
            at += 1;
        }
    }
    Ok(())
}

/// The file, beside the segments, of the sequence numbers lost to damage: each
/// application's newest found in bytes that are not read (see [`salvage_sequences`]),
/// kept once the bytes themselves are cut or deleted.
const LOST: &str = "lost-sequences.json";

fn read_lost(dir: &Path) -> io::Result<HashMap<String, u64>> {
    match fs::read(dir.join(LOST)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.join(LOST).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// Writes the lost sequence numbers durably.
fn write_lost(dir: &Path, lost: &HashMap<String, u64>) -> io::Result<()> {
    write_durably(
        dir,
        LOST,
        &serde_json::to_vec(lost).map_err(io::Error::other)?,
    )
}

/// The file, beside the segments, of the [floor](SegmentWriter::floor) of the sequence
/// numbers of names without records: `{"floor": N}`.
const FLOOR: &str = "name-floor.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Floor {
    floor: u64,
}

fn read_floor(dir: &Path) -> io::Result<u64> {
    match fs::read(dir.join(FLOOR)) {
        Ok(bytes) => serde_json::from_slice::<Floor>(&bytes)
            .map(|f| f.floor)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(FLOOR).display()),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_floor(dir: &Path, floor: u64) -> io::Result<()> {
    write_durably(
        dir,
        FLOOR,
        &serde_json::to_vec(&Floor { floor }).map_err(io::Error::other)?,
    )
}

/// Writes the file `name` in `dir` durably: a new file, synced, renamed over the old
/// one, the directory synced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let new = dir.join(format!("{name}.new"));
    let file = File::create(&new)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    fs::rename(&new, &path)?;
    sync_dir(dir)
}

/// Whether the bytes of `file` from `from` to `to` are all zero.
fn zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut chunk = vec![0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Closes a deleted segment's file on a thread of its own when this is its last handle:
/// the kernel frees a removed file's blocks and cached pages when its last handle is
/// closed, about 14 ms for a 64 MB segment on the development machine, which the writer
/// would otherwise spend between two groups (BENCHMARKS.md, "A segment's rewrite in
/// steps"). A reader still holding the file closes it in its own time.
fn close_apart(file: Arc<File>) {
    if Arc::strong_count(&file) > 1 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("event-log-close".into())
        .spawn(move || drop(file));
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start a thread to close a deleted segment; closed here");
    }
}

/// Writes zeros into `file` from `from` to `to`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 256 << 10] = [0; 256 << 10];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at)
            .unwrap_or(usize::MAX)
            .min(ZEROS.len());
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Cuts a sealed segment's zeros written ahead off (it is not synced: zeros left by a
/// crash are read as the end); whether it did.
fn cut_back(file: &File, len: u64, segment: u64) -> bool {
    match file.set_len(len) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(segment, error = %e, "cannot trim a sealed event log segment");
            false
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// What a test runs inside a segment's rewrite, between the copies' sync and the index's
/// update: how tests forget records while they are being copied.
/// Keyed by the segments' directory, each taken by the first step there.
#[cfg(test)]
pub static WHILE_COPYING: std::sync::Mutex<Vec<(PathBuf, Hook)>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(test)]
pub type Hook = Box<dyn FnOnce() + Send>;

/// Directories whose syncs fail: how tests make a roll-over fail once its file exists.
#[cfg(test)]
pub static FAILING_SYNCS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if FAILING_SYNCS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|failing| failing == dir)
    {
        return Err(io::Error::other("a sync failing in a test"));
    }
    File::open(dir)?.sync_all()
}

/// A new, empty segment, durably in its directory. A file of that name can only be
/// left by an earlier try that failed (the new head's id is one past every segment's),
/// and holds no record: it is made empty again.
fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, id))?;
    file.write_all_at(MAGIC, 0)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

/// What the writer knows of a segment.
struct Stat {
    file: Arc<File>,
    /// Where its records end.
    size: u64,
    /// The file's length: `size` and, in the head, the zeros written ahead of it.
    allocated: u64,
    /// Records the index points to, and their bytes.
    live: u64,
    live_bytes: u64,
}

/// The appending side: owned by the log's writer thread.
pub struct SegmentWriter {
    dir: PathBuf,
    segment_size: u64,
    store: Arc<Segments>,
    /// Every segment, oldest first; the last is the head, where records are appended.
    stats: BTreeMap<u64, Stat>,
    /// The head's tail may hold a partial write that could not be undone: roll first.
    roll_next: bool,
    /// Each application's last sequence number.
    last: HashMap<String, u64>,
    /// The floor: every name forgotten for good had sequence numbers up to this at
    /// most, and a name not in `last` starts above it, so that a position taken in a
    /// forgotten name's numbers is never passed by a later application's first events
    /// ([`Self::forget_names_step`]; kept in [`FLOOR`]).
    floor: u64,
    /// The highest sequence number given to any name.
    high: u64,
    /// Names of deleted applications to forget for good, if they have no record left
    /// ([`Self::forget_names_step`]).
    dropping: Vec<String>,
    /// The floor is raised for the names being forgotten, and these are the names that
    /// have records of an application (`uid`) in some segment, kept or not, as they
    /// were then: such a name is not forgotten.
    floor_raised: Option<std::collections::HashSet<Arc<str>>>,
    /// The floor could not be written: the names wait until then (and the next group).
    floor_retry: Option<std::time::Instant>,
    buf: Vec<u8>,
    /// Records placed by the current append: (application, sequence, location).
    placed: Vec<(String, u64, Loc)>,
    /// The `uid`s of the records [migrated](Self::migrate) and not yet placed.
    migrated_uids: Vec<Option<String>>,
    /// Segments that hold records of deleted applications, to rewrite without them.
    erasing: BTreeSet<u64>,
    /// The segment being rewritten, step by step.
    rewrite: Option<Rewrite>,
    /// The bytes of records a rewrite copies in one step.
    rewrite_step: usize,
    /// The bytes appended by groups since the last step: a step copies at least as
    /// much, so a compaction frees space faster than groups take it.
    appended: usize,
    /// Deleted segments whose files could not be removed, to try again, with their files
    /// held open until then (see [`close_apart`]).
    unlink_later: Vec<(u64, Option<Arc<File>>)>,
}

/// A sealed segment's rewrite under way: the records the index pointed into it when it
/// started, in file order, that are still to be copied.
struct Rewrite {
    victim: u64,
    file: Arc<File>,
    moving: VecDeque<(Arc<str>, u64, Loc)>,
}

/// Notes that `uid` (of the application `name`) has records in `residents`, or, with no
/// `uid`, that `name` has records without one.
fn note_resident(residents: &mut Residents, uid: Option<&str>, name: &str) {
    match uid {
        Some(uid) => {
            if !residents.contains_key(uid) {
                residents.insert(Arc::from(uid), Arc::from(name));
            }
        }
        None => {
            let key = format!("{UNOWNED}{name}");
            if !residents.contains_key(key.as_str()) {
                residents.insert(Arc::from(key), Arc::from(name));
            }
        }
    }
}

/// An application's records found by the scan at open: (sequence, location, index of
/// its `uid` in `uids`).
#[derive(Default)]
struct Found {
    records: Vec<(u64, Loc, u32)>,
    uids: Vec<Option<Arc<str>>>,
}

impl Found {
    fn push(&mut self, sequence: u64, loc: Loc, uid: Option<&str>) {
        // most names have one application, or a few in turn: the last one first
        let known = self
            .uids
            .iter()
            .rposition(|u| u.as_deref() == uid)
            .unwrap_or_else(|| {
                self.uids.push(uid.map(Arc::from));
                self.uids.len() - 1
            });
        self.records.push((sequence, loc, known as u32));
    }
}

impl SegmentWriter {
    /// Opens the segments in `dir` (creating it), checks and indexes every record,
    /// truncates a torn tail of the last segment, and keeps each application's last
    /// `retention` records.
    pub fn open(dir: &Path, segment_size: u64, retention: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut found: HashMap<String, Found> = HashMap::new();
        // the newest sequence number of each application in stretches not read (now
        // and at earlier starts)
        let mut damaged = read_lost(dir)?;
        let mut stats = BTreeMap::new();
        let mut residents: BTreeMap<u64, Residents> = BTreeMap::new();
        for (n, &id) in ids.iter().enumerate() {
            let is_last = n + 1 == ids.len();
            let path = segment_path(dir, id);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut size = file.metadata()?.len();
            if size < HEADER {
                // created, but its header never reached the disk
                tracing::warn!(segment = %path.display(), bytes = size, "an event log segment has a torn header; rewritten");
                file.set_len(0)?;
                file.write_all_at(MAGIC, 0)?;
                file.sync_data()?;
                size = HEADER;
            }
            let mut magic = [0; HEADER as usize];
            file.read_exact_at(&mut magic, 0)?;
            if &magic != MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a segment of the event log", path.display()),
                ));
            }
            let (valid, damage) = scan(&file, size, |offset, len, record| {
                let loc = Loc {
                    segment: id,
                    offset,
                    len,
                    erased: record.is_tombstone(),
                };
                // (a tombstone holds nothing of an application: it keeps no name)
                if !record.is_tombstone() {
                    note_resident(
                        residents.entry(id).or_default(),
                        record.application_uid,
                        record.application,
                    );
                }
                match found.get_mut(record.application) {
                    Some(records) => records.push(record.sequence, loc, record.application_uid),
                    None => {
                        let mut records = Found::default();
                        records.push(record.sequence, loc, record.application_uid);
                        found.insert(record.application.to_owned(), records);
                    }
                }
            })?;
            let mut allocated = size;
            let zeros_only = damage.is_some() && zeros(&file, valid, size)?;
            if damage.is_some() && !zeros_only {
                // kept before the bytes are cut (or, in a sealed segment, deleted later)
                let before = damaged.clone();
                // (the last segment's damaged bytes are cut below: none stay resident)
                let mut cut = Residents::new();
                salvage_sequences(
                    &file,
                    valid,
                    size,
                    &mut damaged,
                    if is_last {
                        &mut cut
                    } else {
                        residents.entry(id).or_default()
                    },
                )?;
                if damaged != before {
                    write_lost(dir, &damaged)?;
                }
            }
            if zeros_only {
                // zeros written ahead of the records (PREALLOCATE): no damage; the head
                // keeps them, a sealed segment lets go of them
                if !is_last && cut_back(&file, valid, id) {
                    allocated = valid;
                }
                size = valid;
            } else if let Some(damage) = damage {
                if is_last {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = valid,
                        bytes = size - valid,
                        cause = damage.as_str(),
                        "the event log ends in a torn or corrupt record: truncated"
                    );
                    file.set_len(valid)?;
                    file.sync_data()?;
                    (size, allocated) = (valid, valid);
                } else {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = valid,
                        bytes = size - valid,
                        cause = damage.as_str(),
                        "an event log segment has a corrupt record: the records after it are not read"
                    );
                }
            }
            stats.insert(
                id,
                Stat {
                    file: Arc::new(file),
                    size,
                    allocated,
                    live: 0,
                    live_bytes: 0,
                },
            );
        }
        if stats.is_empty() {
            let file = create_segment(dir, 1)?;
            stats.insert(
                1,
                Stat {
                    file: Arc::new(file),
                    size: HEADER,
                    allocated: HEADER,
                    live: 0,
                    live_bytes: 0,
                },
            );
        }
        let retention = retention.max(1);
        let mut index = Index::default();
        let mut last = HashMap::new();
        for Found { records, .. } in found.values_mut() {
            // a record copied by a compaction that was cut short is there twice: the
            // later copy counts (a tombstone over the record an erasure cut short copied)
            records.sort_unstable_by_key(|(sequence, loc, _)| (*sequence, u64::MAX - loc.segment));
            records.dedup_by_key(|(sequence, _, _)| *sequence);
        }
        let mut floor = read_floor(dir)?;
        // a name with nothing but tombstones in the files (forgotten for good, its
        // tombstone's segment not gone yet; or kept by an earlier version) is forgotten
        // again, once the floor is above it
        let tombstoned = found
            .values()
            .filter(|of| of.records.iter().all(|(_, loc, _)| loc.erased))
            .flat_map(|of| of.records.iter().map(|(sequence, _, _)| *sequence))
            .max()
            .unwrap_or(0);
        let forget_tombstoned = tombstoned <= floor
            || match write_floor(dir, tombstoned) {
                Ok(()) => {
                    floor = tombstoned;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the event log cannot write its floor of sequence numbers: names of deleted applications are kept until the next start");
                    false
                }
            };
        for (application, Found { mut records, uids }) in found {
            let tombstones = records.iter().take_while(|(_, loc, _)| loc.erased).count();
            if tombstones == records.len() {
                if forget_tombstoned {
                    continue;
                }
            } else if tombstones > 0 {
                // a tombstone holds its name's number while nothing comes after it; one
                // before the name's records is dead (the name came back after being
                // forgotten, or later records of it were kept)
                records.drain(..tombstones);
            }
            let newest = records.last().expect("one record at least").0;
            let keep_from = newest.saturating_sub(retention - 1).max(records[0].0);
            let mut log = AppLog::new(keep_from);
            log.since = records[0].0;
            log.locs.reserve((newest - keep_from + 1) as usize);
            let mut missing = 0;
            for (sequence, loc, uid) in records.into_iter().filter(|(s, _, _)| *s >= keep_from) {
                while keep_from + (log.locs.len() as u64) < sequence {
                    log.locs.push_back(Loc::MISSING);
                    missing += 1;
                }
                let stat = stats.get_mut(&loc.segment).expect("scanned");
                stat.live += 1;
                stat.live_bytes += u64::from(loc.len);
                log.locs.push_back(loc);
                log.note_uid(sequence, uids[uid as usize].as_deref());
            }
            if missing > 0 {
                tracing::warn!(application = %application, missing, "events of the event log were lost to corruption");
            }
            last.insert(application.clone(), newest);
            index.apps.insert(application, log);
        }
        for (application, sequence) in damaged {
            let newest = last.entry(application.clone()).or_default();
            if sequence > *newest {
                tracing::warn!(
                    application = %application,
                    from = *newest + 1,
                    to = sequence,
                    "events of the event log were lost to corruption; their sequence numbers are not given again"
                );
                *newest = sequence;
            }
        }
        // (a name known only by numbers lost to damage, forgotten since, starts above the floor)
        last.retain(|application, sequence| {
            index.apps.contains_key(application.as_str()) || *sequence > floor
        });
        let high = last.values().copied().fold(floor, u64::max);
        index.files = stats
            .iter()
            .map(|(id, stat)| (*id, stat.file.clone()))
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            segment_size: segment_size.max(HEADER + 1),
            store: Arc::new(Segments {
                index: RwLock::new(index),
                forgotten: Mutex::new(Forgotten::default()),
                residents: Mutex::new(residents),
                retention,
            }),
            stats,
            floor,
            high,
            dropping: Vec::new(),
            floor_raised: None,
            floor_retry: None,
            roll_next: false,
            last,
            buf: Vec::new(),
            placed: Vec::new(),
            migrated_uids: Vec::new(),
            erasing: BTreeSet::new(),
            rewrite: None,
            rewrite_step: REWRITE_STEP,
            appended: 0,
            unlink_later: Vec::new(),
        })
    }

    /// What readers share.
    pub fn store(&self) -> Arc<Segments> {
        self.store.clone()
    }

    fn head(&self) -> u64 {
        *self.stats.keys().next_back().expect("a head segment")
    }

    /// Seals the head, without the zeros written ahead of its records, and starts a new
    /// head segment.
    fn roll(&mut self) -> io::Result<()> {
        let head = self.head();
        let sealed = self.stats.get_mut(&head).expect("the head");
        // zeros left behind (by a failure here or a crash) are read as the end
        if sealed.allocated > sealed.size && cut_back(&sealed.file, sealed.size, head) {
            sealed.allocated = sealed.size;
        }
        let id = head + 1;
        let file = Arc::new(create_segment(&self.dir, id)?);
        self.store
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .insert(id, file.clone());
        self.stats.insert(
            id,
            Stat {
                file,
                size: HEADER,
                allocated: HEADER,
                live: 0,
                live_bytes: 0,
            },
        );
        self.roll_next = false;
        Ok(())
    }

    /// Appends `buf` (whole frames) to the head in one write and syncs it, rolling to a
    /// new segment first when the head would grow past the segment size; the segment and
    /// offset it went to. When the group goes past the zeros written ahead, the same sync
    /// takes the next [`PREALLOCATE`] bytes of zeros.
    fn append(&mut self, buf: &[u8]) -> io::Result<(u64, u64)> {
        let head = self.head();
        let size = self.stats[&head].size;
        if self.roll_next || (size > HEADER && size + buf.len() as u64 > self.segment_size) {
            self.roll()?;
        }
        let head = self.head();
        let segment_size = self.segment_size;
        let stat = self.stats.get_mut(&head).expect("the head");
        let offset = stat.size;
        let end = offset + buf.len() as u64;
        let ahead = if end > stat.allocated {
            (end + PREALLOCATE).min(segment_size).max(end)
        } else {
            stat.allocated
        };
        let written = stat
            .file
            .write_all_at(buf, offset)
            .and_then(|()| write_zeros(&stat.file, end.max(stat.allocated), ahead))
            .and_then(|()| stat.file.sync_data());
        if let Err(e) = written {
            // undo a partial write, so that the next group starts on a frame boundary
            match stat
                .file
                .set_len(offset)
                .and_then(|()| stat.file.sync_data())
            {
                Ok(()) => stat.allocated = offset,
                Err(_) => self.roll_next = true,
            }
            return Err(e);
        }
        stat.size = end;
        stat.allocated = ahead;
        Ok((head, offset))
    }

    /// Makes the records in `self.placed` visible to readers and applies the retention.
    fn publish_placed(&mut self, uids: &[Option<&str>]) {
        let mut trimmed = Vec::new();
        {
            let mut index = self
                .store
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for ((application, sequence, loc), uid) in self.placed.iter().zip(uids) {
                let log = match index.apps.get_mut(application.as_str()) {
                    Some(log) => log,
                    None => index
                        .apps
                        .entry(application.clone())
                        .or_insert_with(|| AppLog::new(*sequence)),
                };
                while log.first + (log.locs.len() as u64) < *sequence {
                    log.locs.push_back(Loc::MISSING);
                }
                log.locs.push_back(*loc);
                log.note_uid(*sequence, *uid);
                while log.locs.len() as u64 > self.store.retention
                    || log.locs.front().is_some_and(Loc::is_missing)
                {
                    let old = log.locs.pop_front().expect("not empty");
                    log.first += 1;
                    if !old.is_missing() {
                        trimmed.push(old);
                    }
                }
                log.prune_uids();
            }
        }
        {
            let mut residents = self
                .store
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // (one append: one segment)
            if let Some((_, _, loc)) = self.placed.first() {
                let of = residents.entry(loc.segment).or_default();
                // (a group is mostly of a few applications in runs: one lookup a run)
                let mut noted: Option<(Option<&str>, &str)> = None;
                for ((application, _, _), uid) in self.placed.iter().zip(uids) {
                    if noted != Some((*uid, application)) {
                        note_resident(of, *uid, application);
                        noted = Some((*uid, application));
                    }
                }
            }
        }
        for (_, _, loc) in self.placed.drain(..) {
            let stat = self.stats.get_mut(&loc.segment).expect("a segment");
            stat.live += 1;
            stat.live_bytes += u64::from(loc.len);
        }
        for loc in trimmed {
            if let Some(stat) = self.stats.get_mut(&loc.segment) {
                stat.live -= 1;
                stat.live_bytes -= u64::from(loc.len);
            }
        }
    }

    /// Appends a group of events in one write and one `fdatasync`, then indexes them;
    /// the sequence number of each. Nothing of a group that fails is kept.
    pub fn commit<'a>(
        &mut self,
        group: impl IntoIterator<Item = Draft<'a>>,
    ) -> io::Result<Vec<u64>> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut framed = Vec::new();
        let mut uids = Vec::new();
        for draft in group {
            uids.push(draft.application_uid);
            let sequence = next.entry(draft.application).or_insert_with(|| {
                self.last
                    .get(draft.application)
                    .copied()
                    .unwrap_or(self.floor)
            });
            *sequence += 1;
            let start = buf.len() as u64;
            let len = encode(&mut buf, *sequence, &draft);
            framed.push((draft.application, *sequence, start, len));
        }
        let written = self.append(&buf);
        self.appended = self.appended.saturating_add(buf.len());
        self.buf = buf;
        let (segment, base) = written?;
        for (application, sequence) in next {
            self.high = self.high.max(sequence);
            match self.last.get_mut(application) {
                Some(last) => *last = sequence,
                None => {
                    self.last.insert(application.to_owned(), sequence);
                }
            }
        }
        let sequences = framed.iter().map(|(_, s, _, _)| *s).collect();
        self.placed.extend(
            framed
                .into_iter()
                .map(|(application, sequence, start, len)| {
                    let loc = Loc {
                        segment,
                        offset: base + start,
                        len,
                        erased: false,
                    };
                    (application.to_owned(), sequence, loc)
                }),
        );
        self.publish_placed(&uids);
        Ok(sequences)
    }

    /// Deletes the sealed segments no record is kept in, and rewrites one segment: one
    /// that holds records of a deleted application ([`Segments::forget`]) or else,
    /// when the sealed segments are mostly dead, the deadest.
    pub fn housekeeping(&mut self) {
        if !self.unlink_later.is_empty() {
            let mut later = std::mem::take(&mut self.unlink_later);
            later.retain_mut(|(id, file)| {
                let gone = self.unlink(*id, false);
                if gone && let Some(file) = file.take() {
                    close_apart(file);
                }
                !gone
            });
            self.unlink_later = later;
        }
        self.take_forgotten();
        self.delete_dead();
        if self.rewrite.is_some() {
            if let Err(e) = self.rewrite_step() {
                tracing::warn!(error = %e, "the event log could not rewrite a segment");
            }
        } else if !self.erasing.is_empty() || !self.names_ready() {
            self.start_one();
        } else {
            // the names once their records are erased, a step at a time
            self.forget_names_step();
        }
        // a group of large events (or a compaction) leaves no large buffer behind
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
    }

    /// Starts a segment's rewrite, and takes its first step: one that holds records of
    /// deleted applications, or else the deadest when it is time to compact.
    fn start_one(&mut self) {
        match self.erase_one() {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = self.compact_one() {
                    tracing::warn!(error = %e, "the event log could not compact a segment");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the event log could not erase a deleted application's records");
            }
        }
    }

    /// Sets the bytes of records a rewrite copies in one step ([`REWRITE_STEP`] by
    /// default).
    pub fn set_rewrite_step(&mut self, bytes: usize) {
        self.rewrite_step = bytes.max(1);
    }

    /// Whether a rewrite is under way, or segments holding records of deleted
    /// applications are still to be rewritten: the writer goes on with them between
    /// groups without waiting.
    pub fn rewriting(&self) -> bool {
        self.rewrite.is_some() || !self.erasing.is_empty() || self.names_ready()
    }

    /// Takes the records readers no longer see ([`Segments::forget`]) off the books, and
    /// their segments into those to rewrite.
    fn take_forgotten(&mut self) {
        let Forgotten {
            released,
            uids,
            names,
        } = std::mem::take(
            &mut *self
                .store
                .forgotten
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (segment, (records, bytes)) in released {
            if let Some(stat) = self.stats.get_mut(&segment) {
                stat.live -= records;
                stat.live_bytes -= bytes;
            }
        }
        if !names.is_empty() {
            self.queue_names(names);
        }
        if !uids.is_empty() {
            let residents = self
                .store
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.erasing.extend(
                residents
                    .iter()
                    .filter(|(_, of)| uids.iter().any(|uid| of.contains_key(uid)))
                    .map(|(id, _)| *id),
            );
        }
    }

    /// Whether names wait to be forgotten and may be now: no deleted segment waits for
    /// its removal, and no failed write of the floor waits for its retry.
    fn names_ready(&self) -> bool {
        !self.dropping.is_empty()
            && self.unlink_later.is_empty()
            && self
                .floor_retry
                .is_none_or(|at| std::time::Instant::now() >= at)
    }

    /// Takes the names of deleted applications ([`Forgotten::names`]) to forget for
    /// good once their records are erased from the files ([`Self::forget_names_step`]).
    fn queue_names(&mut self, names: Vec<String>) {
        // (the floor raised again, and the residents looked at again, for these too)
        self.floor_raised = None;
        if self.dropping.is_empty() {
            self.dropping = names;
        } else {
            self.dropping.extend(names);
        }
    }

    /// Forgets for good the next [`NAMES_STEP`] names of those queued that have no
    /// record left to read (only the erased newest), and no record of any application
    /// left in the files (per the segments' [`Residents`]): their entries in the index
    /// and in `last` go. Called once no segment is left to erase. The name's tombstone,
    /// copied by the erasure, is then the only record of the name in the files; it is
    /// never copied again and goes with its segment (a name with nothing but tombstones
    /// is not indexed at open). So that sequence numbers never go back for a consumer
    /// holding a position in a forgotten name's numbers, the first step raises the
    /// [floor](SegmentWriter::floor), durably, to the highest sequence number given so far:
    /// a later application of any name without records starts above it. A name given a
    /// number since (above the floor), or with records left in the files (retention
    /// dropped them, or an erasure failed), is left: the next sweep tries again. When
    /// the floor cannot be written, the names wait a minute (and the next group). Runs
    /// on the writer's thread, between groups: no sequence number is given meanwhile.
    fn forget_names_step(&mut self) {
        if self.floor_raised.is_none() {
            if self.high > self.floor {
                if let Err(e) = write_floor(&self.dir, self.high) {
                    tracing::warn!(error = %e, names = self.dropping.len(), "the event log cannot write its floor of sequence numbers: deleted applications' names are kept for now; tried again in a minute");
                    self.floor_retry = Some(std::time::Instant::now() + FLOOR_RETRY);
                    return;
                }
                self.floor = self.high;
            }
            self.floor_retry = None;
            let residents = self
                .store
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.floor_raised = Some(
                residents
                    .values()
                    .flat_map(|of_segment| of_segment.values().cloned())
                    .collect(),
            );
        }
        let chunk = self
            .dropping
            .split_off(self.dropping.len().saturating_sub(NAMES_STEP));
        let resident = self.floor_raised.as_ref().expect("raised above");
        let removed: Vec<(String, AppLog)> = {
            let mut index = self
                .store
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            chunk
                .into_iter()
                .filter_map(|name| {
                    let log = index.apps.get(name.as_str())?;
                    let last = self.last.get(name.as_str()).copied().unwrap_or(0);
                    // (records of an application of the name left in the files, those
                    // retention dropped or a failed erasure left, could come back at a
                    // restart once the tombstone's segment is gone: the name is kept,
                    // and the next sweep tries again)
                    if last > self.floor
                        || log.locs.iter().any(Loc::is_readable)
                        || resident.contains(name.as_str())
                    {
                        return None;
                    }
                    let log = index.apps.remove(name.as_str())?;
                    Some((name, log))
                })
                .collect()
        };
        // (the entries are dropped with the index's lock let go)
        for (name, log) in &removed {
            for loc in log.locs.iter().filter(|loc| !loc.is_missing()) {
                if let Some(stat) = self.stats.get_mut(&loc.segment) {
                    stat.live -= 1;
                    stat.live_bytes -= u64::from(loc.len);
                }
            }
            self.last.remove(name.as_str());
        }
        if !removed.is_empty() {
            tracing::debug!(
                names = removed.len(),
                floor = self.floor,
                "names of deleted applications forgotten by the event log"
            );
        }
        drop(removed);
        if self.dropping.is_empty() {
            self.dropping = Vec::new();
            self.floor_raised = None;
            // what a mass of deleted names grew goes back (once, after the last step)
            if self.last.capacity() > 4 * self.last.len() + 4096 {
                self.last.shrink_to_fit();
            }
            let mut index = self
                .store
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if index.apps.capacity() > 4 * index.apps.len() + 4096 {
                let mut smaller = HashMap::with_capacity(index.apps.len());
                smaller.extend(index.apps.drain());
                let larger = std::mem::replace(&mut index.apps, smaller);
                drop(index);
                // (its memory goes back with the lock let go)
                drop(larger);
            }
        }
    }

    /// Rewrites one segment that holds records of deleted applications, sealing it
    /// first when it is the head: its kept records are copied to the head (the erased
    /// newest of a name as a tombstone) and it is deleted. Whether there was one.
    fn erase_one(&mut self) -> io::Result<bool> {
        let head = self.head();
        if self.erasing.contains(&head) {
            // sealed first, so that what the rewrites copy goes to a head not to be
            // rewritten again
            if let Err(e) = self.roll() {
                self.erasing.remove(&head);
                return Err(e);
            }
        }
        let Some(&id) = self.erasing.first() else {
            return Ok(false);
        };
        // (a segment that fails is not tried again and again; the next sweep finds what
        // is left of it)
        self.erasing.remove(&id);
        if !self.stats.contains_key(&id) {
            return Ok(true);
        }
        self.start_rewrite(id);
        self.rewrite_step()?;
        Ok(true)
    }

    fn delete_dead(&mut self) {
        let head = self.head();
        // (a segment being rewritten is deleted by its last step)
        let rewriting = self.rewrite.as_ref().map(|r| r.victim);
        let dead: Vec<u64> = self
            .stats
            .iter()
            .filter(|(id, stat)| **id != head && Some(**id) != rewriting && stat.live == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.delete(id);
        }
    }

    fn delete(&mut self, id: u64) {
        let file = self.stats.remove(&id).map(|stat| stat.file);
        self.erasing.remove(&id);
        self.store
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .remove(&id);
        // (held open until unlinked, so that the removal does not free the file's blocks)
        if self.unlink(id, true) {
            if let Some(file) = file {
                close_apart(file);
            }
        } else {
            self.unlink_later.push((id, file));
        }
    }

    /// Removes a deleted segment's file, durably (its directory synced after); whether
    /// it is gone. Its residents go with it: until then a crash could bring the file
    /// back, and the applications it holds stay listed for the sweep to erase.
    fn unlink(&self, id: u64, first: bool) -> bool {
        let path = segment_path(&self.dir, id);
        let removed = match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => sync_dir(&self.dir),
        };
        match removed {
            Err(e) => {
                if first {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete an event log segment; tried again after the next groups");
                }
                false
            }
            Ok(()) => {
                self.store
                    .residents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                true
            }
        }
    }

    /// When the sealed segments hold more than twice the bytes of their live records (and
    /// more than two segments' worth), copies the live records of the deadest one to the
    /// head, keeping their sequence numbers, and deletes it. Whether it did.
    fn compact_one(&mut self) -> io::Result<bool> {
        let head = self.head();
        let (sealed, live) = self
            .stats
            .iter()
            .filter(|(id, _)| **id != head)
            .fold((0, 0), |(size, live), (_, stat)| {
                (size + stat.size, live + stat.live_bytes)
            });
        if sealed <= self.segment_size.saturating_mul(2) || sealed <= live.saturating_mul(2) {
            return Ok(false);
        }
        // the segment with the smallest share of live bytes
        let victim = self
            .stats
            .iter()
            .filter(|(id, _)| **id != head)
            .min_by(|(_, a), (_, b)| {
                (u128::from(a.live_bytes) * u128::from(b.size.max(1)))
                    .cmp(&(u128::from(b.live_bytes) * u128::from(a.size.max(1))))
            })
            .map(|(id, _)| *id)
            .expect("sealed segments");
        self.start_rewrite(victim);
        self.rewrite_step()?;
        Ok(true)
    }

    /// Starts copying the kept records of the sealed segment `victim` to the head,
    /// keeping their sequence numbers (a record marked erased as its tombstone); the
    /// segment is deleted after the last [step](Self::rewrite_step).
    fn start_rewrite(&mut self, victim: u64) {
        let Some(stat) = self.stats.get(&victim) else {
            return;
        };
        // (an application's name shared by its records)
        let mut moving: Vec<(Arc<str>, u64, Loc)> = {
            let index = self
                .store
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            index
                .apps
                .iter()
                .flat_map(|(application, log)| {
                    let application: Arc<str> = Arc::from(application.as_str());
                    log.locs
                        .iter()
                        .enumerate()
                        .filter(|(_, loc)| loc.segment == victim && !loc.is_missing())
                        .map(move |(i, loc)| (application.clone(), log.first + i as u64, *loc))
                })
                .collect()
        };
        moving.sort_unstable_by_key(|(_, _, loc)| loc.offset);
        self.appended = 0;
        self.rewrite = Some(Rewrite {
            victim,
            file: stat.file.clone(),
            moving: moving.into(),
        });
    }

    /// Copies the next bytes of records of the segment being rewritten to the head,
    /// with one write and one sync, and points the index at the copies; after the last,
    /// deletes the segment. A step takes [`REWRITE_STEP`] bytes (or as set), or as many
    /// as the groups appended since the step before, if more. A rewrite that fails is
    /// given up: what it copied counts, the rest stays where it is, and the segment goes
    /// once nothing in it is kept (or with a later rewrite).
    fn rewrite_step(&mut self) -> io::Result<()> {
        let Some(rewrite) = self.rewrite.as_mut() else {
            return Ok(());
        };
        let victim = rewrite.victim;
        let mut step = Vec::new();
        let mut bytes = 0;
        let budget = self.rewrite_step.max(std::mem::take(&mut self.appended));
        while bytes < budget
            && let Some(record) = rewrite.moving.pop_front()
        {
            bytes += record.2.len as usize;
            step.push(record);
        }
        let done = rewrite.moving.is_empty();
        let file = rewrite.file.clone();
        let result = self.copy_step(victim, &file, step);
        if result.is_err() || done {
            self.rewrite = None;
        }
        result?;
        if done {
            self.delete(victim);
            close_apart(file);
        }
        Ok(())
    }

    /// One step of a rewrite: the records of `step` the index still points at in
    /// `victim` (as they are now: forgotten meanwhile, they are not copied; marked
    /// erased, as tombstones).
    fn copy_step(
        &mut self,
        victim: u64,
        file: &File,
        mut step: Vec<(Arc<str>, u64, Loc)>,
    ) -> io::Result<()> {
        let head = self.head();
        {
            let index = self
                .store
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            step.retain_mut(|(application, sequence, loc)| {
                let now = index
                    .apps
                    .get(&**application)
                    .and_then(|log| log.slot(*sequence));
                match now {
                    Some(now) if now.is_record_of(loc) => {
                        loc.erased = now.erased;
                        true
                    }
                    _ => false,
                }
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut copies = Vec::with_capacity(step.len());
        let mut frame = Vec::new();
        // the applications whose records go to the head
        let mut copied = Residents::new();
        for (application, sequence, loc) in step {
            let start = buf.len() as u64;
            if loc.erased {
                // nothing of the event goes along
                let len = encode_tombstone(&mut buf, sequence, &application);
                copies.push((application, sequence, loc, Some((start, len))));
                continue;
            }
            frame.resize(loc.len as usize, 0);
            file.read_exact_at(&mut frame, loc.offset)?;
            if let Some(record) = decode(&frame) {
                note_resident(&mut copied, record.application_uid, record.application);
                buf.extend_from_slice(&frame);
                copies.push((application, sequence, loc, Some((start, loc.len))));
            } else {
                tracing::warn!(application = %application, sequence, "an event log record no longer matches its checksum; dropped");
                copies.push((application, sequence, loc, None));
            }
        }
        let written = if buf.is_empty() {
            Ok((head, 0))
        } else {
            self.append(&buf)
        };
        self.buf = buf;
        let (segment, base) = written?;
        #[cfg(test)]
        {
            let hook = {
                let mut hooks = WHILE_COPYING.lock().unwrap_or_else(PoisonError::into_inner);
                hooks
                    .iter()
                    .position(|(dir, _)| *dir == self.dir)
                    .map(|at| hooks.remove(at).1)
            };
            if let Some(hook) = hook {
                hook();
            }
        }
        // (records and bytes) pointed at the head now, and no longer at the victim
        let mut moved = (0, 0);
        let mut left = (0, 0);
        {
            let mut index = self
                .store
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (application, sequence, old, new) in &copies {
                // (a record forgotten meanwhile is not pointed at: its copy, resident
                // in the head, is erased with the head, since its uid is forgotten)
                let Some(slot) = index
                    .apps
                    .get_mut(&**application)
                    .and_then(|log| log.slot_mut(*sequence))
                else {
                    continue;
                };
                // (the same record, perhaps marked erased meanwhile)
                if !slot.is_record_of(old) {
                    continue;
                }
                left.0 += 1;
                left.1 += u64::from(old.len);
                *slot = match new {
                    Some((start, len)) => {
                        moved.0 += 1;
                        moved.1 += u64::from(*len);
                        Loc {
                            segment,
                            offset: base + start,
                            len: *len,
                            erased: slot.erased,
                        }
                    }
                    None => Loc::MISSING,
                };
            }
        }
        if let Some(stat) = self.stats.get_mut(&segment) {
            stat.live += moved.0;
            stat.live_bytes += moved.1;
        }
        if let Some(stat) = self.stats.get_mut(&victim) {
            stat.live -= left.0;
            stat.live_bytes -= left.1;
        }
        if !copied.is_empty() {
            let mut residents = self
                .store
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let of_head = residents.entry(segment).or_default();
            for (uid, name) in copied {
                of_head.entry(uid).or_insert(name);
            }
        }
        tracing::debug!(
            segment = victim,
            records = moved.0,
            bytes = moved.1,
            "event log records copied by a segment's rewrite"
        );
        Ok(())
    }

    /// Housekeeping until there is nothing left to do (at open).
    pub fn settle(&mut self) -> io::Result<()> {
        self.delete_dead();
        for _ in 0..self.stats.len() {
            if !self.compact_one()? {
                break;
            }
            while self.rewrite.is_some() {
                self.rewrite_step()?;
            }
            self.delete_dead();
        }
        Ok(())
    }

    /// The last sequence number of an application.
    pub fn last_sequence(&self, application: &str) -> u64 {
        self.last.get(application).copied().unwrap_or(0)
    }

    /// Takes one event of the previous log format, with its sequence number; those at or
    /// below what the segments already hold for the application are skipped (a migration
    /// cut short is repeated). Call [`Self::finish_migration`] at the end.
    pub fn migrate(&mut self, sequence: u64, draft: Draft<'_>) -> io::Result<()> {
        let last = self.last.get(draft.application).copied().unwrap_or(0);
        if sequence <= last {
            return Ok(());
        }
        let start = self.buf.len() as u64;
        let len = encode(&mut self.buf, sequence, &draft);
        self.placed.push((
            draft.application.to_owned(),
            sequence,
            Loc {
                segment: 0,
                offset: start,
                len,
                erased: false,
            },
        ));
        self.migrated_uids
            .push(draft.application_uid.map(str::to_owned));
        self.high = self.high.max(sequence);
        match self.last.get_mut(draft.application) {
            Some(last) => *last = sequence,
            None => {
                self.last.insert(draft.application.to_owned(), sequence);
            }
        }
        if self.buf.len() >= MIGRATION_CHUNK {
            self.finish_migration()?;
        }
        Ok(())
    }

    /// Writes and indexes what [`Self::migrate`] took.
    pub fn finish_migration(&mut self) -> io::Result<()> {
        if self.placed.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let written = self.append(&buf);
        self.buf = buf;
        self.buf.clear();
        let (segment, base) = written?;
        for (_, _, loc) in &mut self.placed {
            loc.segment = segment;
            loc.offset += base;
        }
        let migrated = std::mem::take(&mut self.migrated_uids);
        let uids: Vec<Option<&str>> = migrated.iter().map(Option::as_deref).collect();
        self.publish_placed(&uids);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Housekeeping until no segment is left to rewrite: the erasure of what was
    /// forgotten is done (the names wait for the next call).
    fn erase(writer: &mut SegmentWriter) {
        writer.housekeeping();
        while writer.rewriting() {
            writer.housekeeping();
        }
    }

    fn draft<'a>(application: &'a str, uid: &'a str, json: &'a str) -> Draft<'a> {
        Draft {
            application,
            application_uid: Some(uid),
            subject: None,
            json,
        }
    }

    #[test]
    fn a_step_copies_at_least_what_the_groups_since_the_last_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        // one record a step, when no group comes in between
        writer.set_rewrite_step(1);
        let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
        let group: Vec<Draft<'_>> = (0..100)
            .flat_map(|_| [draft("a", "uid-a", &json), draft("b", "uid-b", &json)])
            .collect();
        writer.commit(group).unwrap();
        writer.store().forget_all([("a", "uid-a")]);
        let left = |writer: &SegmentWriter| writer.rewrite.as_ref().map(|r| r.moving.len());
        // the head is sealed, and the first step copies one of b's 100 (and a's newest,
        // a tombstone, is among the 101 to copy)
        writer.housekeeping();
        assert_eq!(left(&writer), Some(100));
        // a group of 30 records like b's: the next step copies 30, the one after one
        let group: Vec<Draft<'_>> = (0..30).map(|_| draft("c", "uid-c", &json)).collect();
        writer.commit(group).unwrap();
        writer.housekeeping();
        assert_eq!(left(&writer), Some(70));
        writer.housekeeping();
        assert_eq!(left(&writer), Some(69));
        while writer.rewriting() {
            writer.housekeeping();
        }
        assert_eq!(left(&writer), None);
        // then "a", with nothing left to read, is forgotten for good
        let store = writer.store();
        assert!(!writer.last.contains_key("a"));
        assert_eq!((store.names(), writer.floor), (2, 100));
        assert_eq!(store.read("b", 0, usize::MAX).unwrap().len(), 100);
        assert_eq!(store.read("a", 0, usize::MAX).unwrap().len(), 0);
        assert_eq!(store.read("c", 0, usize::MAX).unwrap().len(), 30);
    }

    /// A deleted application with many records is forgotten a step at a time: appends
    /// and reads get the index's lock between the steps, and what they append meanwhile
    /// is kept (a late record of the deleted application for the next forget).
    #[test]
    fn a_large_forget_goes_in_steps_and_lets_appends_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 64 << 20, 1_000_000).unwrap();
        let gone = 2 * FORGET_STEP + 100;
        let group: Vec<Draft<'_>> = (0..gone)
            .map(|_| draft("a", "uid-a", "{}"))
            .chain((0..10).map(|_| draft("b", "uid-b", "{}")))
            .collect();
        writer.commit(group).unwrap();
        let first_segment = writer.head();
        let store = writer.store();
        let mut steps = 0;
        let removed = store.forget_in_steps([("a", "uid-a")], &mut || {
            steps += 1;
            assert!(
                store.index.try_write().is_ok(),
                "the index's lock is let go between steps"
            );
            // while it goes on: a late record of the deleted application, then the
            // name made again, and another application's records
            let late = match steps {
                1 => draft("a", "uid-a", "{}"),
                2 => draft("a", "uid-a2", "{}"),
                _ => return,
            };
            writer
                .commit(vec![late, draft("b", "uid-b", "{}")])
                .unwrap();
        });
        assert_eq!(removed, gone);
        assert_eq!(steps, gone.div_ceil(FORGET_STEP));
        let sequences = |store: &Segments, application: &str| -> Vec<u64> {
            store
                .read(application, 0, usize::MAX)
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect()
        };
        let gone = gone as u64;
        assert_eq!(store.kept("a"), Some((gone + 1, gone + 2)));
        assert_eq!(sequences(&store, "a"), vec![gone + 1, gone + 2]);
        assert_eq!(sequences(&store, "b"), (1..=12).collect::<Vec<_>>());
        // the late record is still known as the deleted application's: the next sweep
        // forgets it
        assert_eq!(store.forget_all([("a", "uid-a")]), 1);
        assert_eq!(store.kept("a"), Some((gone + 2, gone + 2)));
        // erased from disk: the segment goes, and a reopened log has the same
        erase(&mut writer);
        assert!(
            store
                .application_uids()
                .iter()
                .all(|(_, uid)| uid != "uid-a")
        );
        assert!(!segment_path(dir.path(), first_segment).exists());
        drop((writer, store));
        let writer = SegmentWriter::open(dir.path(), 64 << 20, 1_000_000).unwrap();
        let store = writer.store();
        assert_eq!(sequences(&store, "a"), vec![gone + 2]);
        assert_eq!(sequences(&store, "b"), (1..=12).collect::<Vec<_>>());
    }

    /// Many names of deleted applications are forgotten for good a step at a time,
    /// once their records are erased; their tombstones are no longer counted, so
    /// their segments go; a name given a record between two steps is kept; a name
    /// that comes back numbers above the floor and, opened again, is indexed from its
    /// new records only.
    #[test]
    fn names_are_forgotten_for_good_a_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 64 << 10, 1000).unwrap();
        // (another application's 5 make the floor 5)
        writer
            .commit((0..5).map(|_| draft("kept", "uid-kept", "{}")))
            .unwrap();
        let names: Vec<(String, String)> = (0..2 * NAMES_STEP + 10)
            .map(|n| (format!("gone-{n}"), format!("uid-gone-{n}")))
            .collect();
        writer
            .commit(names.iter().map(|(name, uid)| draft(name, uid, "{}")))
            .unwrap();
        let store = writer.store();
        let removed = store.forget_all(names.iter().map(|(n, u)| (n.as_str(), u.as_str())));
        assert_eq!(removed, 0, "each name's one record is its newest");
        assert_eq!(store.names(), names.len() + 1);

        // their records are erased first (the newest copied as tombstones)
        writer.housekeeping();
        while writer.rewrite.is_some() || !writer.erasing.is_empty() {
            assert_eq!(store.names(), names.len() + 1);
            writer.housekeeping();
        }
        assert!(writer.rewriting(), "the names wait");
        writer.housekeeping();
        assert_eq!(store.names(), names.len() + 1 - NAMES_STEP, "one step");
        assert_eq!(writer.floor, 5);
        // a record of one not forgotten yet (the queue goes from its end) keeps it
        assert_eq!(
            writer.commit([draft("gone-0", "uid-new", "{}")]).unwrap(),
            [2]
        );
        while writer.rewriting() {
            writer.housekeeping();
        }
        assert_eq!(store.names(), 2);
        assert_eq!(writer.last.len(), 2);
        assert_eq!(store.read("gone-0", 0, 10).unwrap().len(), 1);
        // the tombstones count for nothing: the sealed segments that held only them go
        writer.housekeeping();
        let live: u64 = writer.stats.values().map(|stat| stat.live).sum();
        assert_eq!(live, 7, "kept's 5, gone-0's new one and its tombstone");
        let head = writer.head();
        assert!(
            writer
                .stats
                .keys()
                .all(|id| *id == head || writer.stats[id].live > 0)
        );
        // a forgotten name comes back above the floor
        assert_eq!(
            writer.commit([draft("gone-1", "uid-back", "{}")]).unwrap(),
            [6]
        );
        drop(writer);

        // opened again: the names with only tombstones left are not indexed, and the
        // one that came back holds its new record alone, from 6 (its tombstone, 1, in
        // the files still, is no part of it)
        let writer = SegmentWriter::open(dir.path(), 64 << 10, 1000).unwrap();
        let store = writer.store();
        assert_eq!(store.names(), 3);
        assert_eq!(writer.last.len(), 3);
        assert_eq!(writer.floor, 5);
        assert_eq!(store.kept("gone-1"), Some((6, 6)));
        assert_eq!(store.since("gone-1"), 6);
        let live: u64 = writer.stats.values().map(|stat| stat.live).sum();
        assert_eq!(
            live, 7,
            "gone-0's tombstone, before its new record, is dead too"
        );
        let on_disk = |name: &str| {
            let mut field = (name.len() as u32).to_le_bytes().to_vec();
            field.extend_from_slice(name.as_bytes());
            fs::read_dir(dir.path()).unwrap().any(|entry| {
                let data = fs::read(entry.unwrap().path()).unwrap();
                data.windows(field.len()).any(|w| w == field)
            })
        };
        assert!(
            names.iter().filter(|(name, _)| on_disk(name)).count() > 2,
            "tombstones left in the files"
        );
    }

    /// A name whose records of another application are left in the files (retention
    /// dropped them from the index, and another application's record keeps their
    /// segment) is not forgotten: once its tombstone's segment went, a restart would
    /// index those records and give the numbers after them again.
    #[test]
    fn a_name_with_records_left_in_the_files_keeps_its_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1).unwrap();
        writer
            .commit((0..3).map(|_| draft("a", "uid-a", "{}")))
            .unwrap();
        writer.roll().unwrap();
        writer
            .commit([
                draft("c", "uid-c", "{}"),
                draft("a", "uid-b", "{}"),
                draft("a", "uid-b", "{}"),
            ])
            .unwrap();
        writer.roll().unwrap();
        // uid-a's late record: retention (one) drops uid-b's from the index
        writer.commit([draft("a", "uid-a", "{}")]).unwrap();
        let store = writer.store();
        assert_eq!(store.kept("a"), Some((6, 6)));
        store.forget_all([("a", "uid-a")]);
        erase(&mut writer);
        assert!(
            !writer
                .store
                .residents
                .lock()
                .unwrap()
                .values()
                .any(|of| of.contains_key("uid-a"))
        );
        assert_eq!(store.read("a", 0, 10).unwrap().len(), 0);
        assert_eq!(
            store.names(),
            2,
            "\"a\" kept: uid-b's records are in the files"
        );
        assert_eq!(writer.last_sequence("a"), 6);

        // uid-b deleted too: its records go, and so does the name
        store.forget_all([("a", "uid-b")]);
        erase(&mut writer);
        assert_eq!(store.names(), 1);
        drop(writer);
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(writer.store().names(), 1);
        assert_eq!(writer.commit([draft("a", "uid-d", "{}")]).unwrap(), [7]);
    }

    /// Records that carry no `uid` (an event without the `applicationuid` extension)
    /// keep their name as records of an application do, at run time and at open (so a
    /// restart after the erased newest's tombstone went could not index them again below
    /// a number handed out), and are never taken for an application the sweep could find
    /// deleted.
    #[test]
    fn a_name_with_records_without_a_uid_in_the_files_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1).unwrap();
        let unowned = Draft {
            application_uid: None,
            ..draft("a", "", "{}")
        };
        writer.commit([unowned, draft("c", "uid-c", "{}")]).unwrap();
        writer.roll().unwrap();
        // uid-a's record: retention (one) drops the record without a uid from the index
        writer.commit([draft("a", "uid-a", "{}")]).unwrap();
        let store = writer.store();
        assert_eq!(store.kept("a"), Some((2, 2)));
        let mut listed = store.application_uids();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("a".to_owned(), "uid-a".to_owned()),
                ("c".to_owned(), "uid-c".to_owned())
            ],
            "only applications are listed to the sweep"
        );
        store.forget_all([("a", "uid-a")]);
        erase(&mut writer);
        writer.housekeeping();
        assert_eq!(store.read("a", 0, 10).unwrap().len(), 0);
        assert_eq!(
            store.names(),
            2,
            "\"a\" kept: its record without a uid is in the files"
        );
        assert_eq!(writer.commit([draft("a", "uid-d", "{}")]).unwrap(), [3]);
        drop(writer);

        // and so at open, from the scan
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1).unwrap();
        let store = writer.store();
        store.forget_all([("a", "uid-d")]);
        erase(&mut writer);
        writer.housekeeping();
        assert_eq!(store.names(), 2);
        assert_eq!(writer.commit([draft("a", "uid-e", "{}")]).unwrap(), [4]);
    }

    /// A forgotten name's tombstone, read again at open, keeps nothing: the name's next
    /// application, deleted in turn, lets the name go.
    #[test]
    fn a_tombstone_read_at_open_keeps_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        writer
            .commit([draft("c", "uid-c", "{}"), draft("a", "uid-1", "{}")])
            .unwrap();
        let forget = |writer: &mut SegmentWriter, uid: &str| {
            writer.store().forget_all([("a", uid)]);
            erase(writer);
            writer.housekeeping();
        };
        forget(&mut writer, "uid-1");
        assert_eq!(writer.store().names(), 1);
        drop(writer);

        // the tombstone is in the files still, with c's record
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        assert_eq!(writer.store().names(), 1);
        writer.roll().unwrap();
        writer.commit([draft("a", "uid-2", "{}")]).unwrap();
        assert_eq!(writer.store().names(), 2);
        forget(&mut writer, "uid-2");
        assert_eq!(
            writer.store().names(),
            1,
            "the old tombstone's segment keeps no name"
        );
    }

    /// A crash between an erasure's copy of a name's newest as a tombstone and the
    /// removal of its segment leaves both; opened again, the tombstone counts, the name
    /// is not indexed, and the floor is raised above it.
    #[test]
    fn a_tombstone_over_its_record_left_by_a_crash_raises_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        writer.commit([draft("a", "uid-a", "{}")]).unwrap();
        writer.roll().unwrap();
        writer.commit([draft("c", "uid-c", "{}")]).unwrap();
        let victim = segment_path(dir.path(), 1);
        let saved = fs::read(&victim).unwrap();
        writer.store().forget_all([("a", "uid-a")]);
        // the erasure: the tombstone copied to the head, the segment removed; the
        // names wait for the next call
        writer.housekeeping();
        assert!(!victim.exists());
        assert_eq!(writer.store().names(), 2);
        drop(writer);
        fs::write(&victim, saved).unwrap();
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        assert_eq!(writer.store().names(), 1);
        assert_eq!(writer.floor, 1);
        assert_eq!(writer.commit([draft("a", "uid-new", "{}")]).unwrap(), [2]);
    }

    /// A floor that cannot be written keeps the names: at run time until its retry, at
    /// open until the next start (the log opens all the same).
    #[test]
    fn names_wait_for_a_floor_that_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let failing = || FAILING_SYNCS.lock().unwrap().push(dir.path().to_owned());
        let healed = || {
            FAILING_SYNCS
                .lock()
                .unwrap()
                .retain(|failing| failing != dir.path())
        };
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        writer.commit([draft("a", "uid-a", "{}")]).unwrap();
        writer.roll().unwrap();
        writer.commit([draft("c", "uid-c", "{}")]).unwrap();
        let store = writer.store();
        store.forget_all([("a", "uid-a")]);
        // the erasure, then the names' first step, whose floor cannot be written
        writer.housekeeping();
        assert!(writer.names_ready());
        failing();
        writer.housekeeping();
        healed();
        assert_eq!(store.names(), 2);
        assert!(!writer.rewriting(), "no retry before its time");
        writer.housekeeping();
        assert_eq!(store.names(), 2);
        writer.floor_retry = Some(std::time::Instant::now());
        assert!(writer.rewriting());
        writer.housekeeping();
        assert_eq!((store.names(), writer.floor), (1, 1));
        drop(writer);

        // at open: "b"'s tombstone is in the head, and the floor cannot be raised above it
        let mut writer = SegmentWriter::open(dir.path(), 1 << 20, 1000).unwrap();
        writer.commit([draft("b", "uid-b", "{}")]).unwrap();
        writer.commit([draft("b", "uid-b", "{}")]).unwrap();
        writer.store().forget_all([("b", "uid-b")]);
        writer.housekeeping();
        drop(writer);
        failing();
        let opened = SegmentWriter::open(dir.path(), 1 << 20, 1000);
        healed();
        let mut writer = opened.unwrap();
        assert_eq!(writer.store().names(), 2, "b kept");
        // (b numbered 2 and 3, above the floor of 1: its numbers go on)
        assert_eq!(writer.commit([draft("b", "uid-d", "{}")]).unwrap(), [4]);
    }

    /// The open files of this process under `dir`, removed ones too (Linux).
    #[cfg(target_os = "linux")]
    fn open_under(dir: &Path) -> Vec<String> {
        let prefix = dir.to_string_lossy().into_owned();
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with(&prefix))
            .collect()
    }

    /// A segment erased by a rewrite is removed and its file closed (on a thread of its
    /// own, so the writer does not wait for the kernel to free it): no handle to it
    /// stays open.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_erased_segments_file_is_closed_once_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // (as the process's open files name it)
        let dir = tmp.path().canonicalize().unwrap();
        let mut writer = SegmentWriter::open(&dir, 1 << 20, 1000).unwrap();
        let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
        let group: Vec<Draft<'_>> = (0..100)
            .flat_map(|_| [draft("a", "uid-a", &json), draft("b", "uid-b", &json)])
            .collect();
        writer.commit(group).unwrap();
        let first = writer.head();
        let path = segment_path(&dir, first);
        assert!(open_under(&dir).contains(&path.to_string_lossy().into_owned()));
        writer.store().forget_all([("a", "uid-a")]);
        erase(&mut writer);
        assert!(!path.exists(), "the segment is removed");
        let (path, removed) = (
            path.to_string_lossy().into_owned(),
            format!("{} (deleted)", path.display()),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let open = open_under(&dir);
            if !open.iter().any(|f| *f == path || *f == removed) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still open: {open:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(writer.store().read("b", 0, usize::MAX).unwrap().len(), 100);
    }
}
