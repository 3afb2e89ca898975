//! The message store for persistent messages in durable queues: append-only
//! segment files (`NNNNNNNN.seg`) with a companion acknowledgement file
//! (`NNNNNNNN.ack`, the positions of removed records). A segment whose every
//! record is acknowledged is deleted (reclamation). Appends go to an
//! in-memory batch; one syncer thread writes each batch and `fdatasync`s it,
//! so many publishes share one fsync under load, and then advances
//! [`Store::synced`], which publisher confirms wait on (see [`syncer`] for
//! what happens when a write fails: nothing is confirmed, nothing is torn,
//! the batch is retried).
//!
//! Transient messages paged out of memory are appended too, flagged so that
//! recovery skips them.
//!
//! Record layout (little endian): `len u32 | crc32 u32 | payload`, payload =
//! `flags u8 | qlen u16 | queue | expires_ms u64 | exlen u8 | exchange | rklen u8 | key |
//! plen u32 | properties | blen u32 | body`. A torn tail (after a crash) fails
//! its length or CRC check and ends recovery of that segment.

use crate::error::BrokerError;
use crate::message::Message;
use parking_lot::{Condvar, Mutex};
use rustc_hash::{FxHashMap, FxHashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

mod signal;
mod syncer;

use signal::SyncSignal;

/// Record flag: a transient message paged to disk, dropped at recovery.
const FLAG_TRANSIENT: u8 = 1;

/// Segment size at which a new segment is started.
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// Where a stored record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRef {
    /// Segment number.
    pub seg: u32,
    /// Byte offset of the record in the segment.
    pub pos: u32,
}

/// A message read back at startup.
#[derive(Debug)]
pub struct Recovered {
    /// Queue it belongs to.
    pub queue: String,
    /// The message.
    pub msg: Message,
    /// Absolute expiry (ms since epoch), 0 if none.
    pub expires_ms: u64,
    /// Its record.
    pub sref: StoreRef,
}

/// A run of records appended to one segment, starting at `start`.
struct Chunk {
    seg: u32,
    start: u64,
    bytes: Arc<Vec<u8>>,
}

impl Chunk {
    fn find(&self, r: StoreRef) -> Option<&[u8]> {
        let pos = u64::from(r.pos);
        if self.seg != r.seg || pos < self.start || pos >= self.start + self.bytes.len() as u64 {
            return None;
        }
        Some(&self.bytes[(pos - self.start) as usize..])
    }
}

/// Everything appended, acknowledged or reclaimed since the syncer last
/// took work; written and synced as one unit.
#[derive(Default)]
struct Batch {
    msgs: Vec<Chunk>,
    acks: Vec<(u32, Vec<u8>)>,
    deletes: Vec<u32>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.acks.is_empty() && self.deletes.is_empty()
    }
    /// The bytes that take the next record of segment `seg`, which starts
    /// at `start` if a new chunk is begun for it.
    fn chunk_for(&mut self, seg: u32, start: u64) -> &mut Vec<u8> {
        if self.msgs.last().is_none_or(|c| c.seg != seg) {
            self.msgs.push(Chunk {
                seg,
                start,
                bytes: Arc::new(Vec::with_capacity(CHUNK_FIRST)),
            });
        }
        let last = self.msgs.last_mut().expect("a chunk was just pushed");
        Arc::make_mut(&mut last.bytes)
    }
    fn push(list: &mut Vec<(u32, Vec<u8>)>, seg: u32, bytes: &[u8]) {
        match list.last_mut() {
            Some((s, buf)) if *s == seg => buf.extend_from_slice(bytes),
            _ => list.push((seg, bytes.to_vec())),
        }
    }
    /// Put a batch that failed to be written back in front of `self` (what
    /// was added since), so it is retried first and in order.
    fn prepend(&mut self, mut failed: Batch) {
        failed.msgs.append(&mut self.msgs);
        failed.acks.append(&mut self.acks);
        failed.deletes.append(&mut self.deletes);
        *self = failed;
    }
}

struct Inner {
    /// Records taken by the syncer and not yet written to their files.
    inflight: Vec<Chunk>,
    cur_seg: u32,
    cur_len: u64,
    /// Live records per segment (looked up on every append and ack: the
    /// keys are the store's own numbers, so a fast Fx hash).
    live: FxHashMap<u32, u64>,
    batch: Batch,
    written_seq: u64,
    /// Connections in the middle of handling what they read from their
    /// client (see [`Store::hold`]): appends they make wake nobody, the
    /// release at the end does.
    holds: u32,
    /// Holds released so far (the syncer's group commit waits for one).
    released: u64,
    /// What the syncer is waiting for, so that appends, acknowledgements
    /// and releases wake it only when it needs waking.
    waiting: Waiting,
}

/// What the syncer thread is doing, as far as waking it goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Writing or syncing: it looks at the batch again when done.
    Busy,
    /// Nothing pending: any append, acknowledgement or deletion wakes it.
    Idle,
    /// Only acknowledgements pending: they are written within
    /// [`ACK_WRITE_AFTER`]; a record or a deletion wakes it.
    Acks,
    /// Records pending while a connection holds the store: its release
    /// (or [`GROUP_COMMIT_MAX`]) ends the wait.
    Group,
}

impl Inner {
    /// Start a new segment; the old one is reclaimed if nothing in it is live.
    fn roll(&mut self) {
        let old = self.cur_seg;
        self.cur_seg += 1;
        self.cur_len = 0;
        if self.live.get(&old).copied().unwrap_or(0) == 0 {
            self.live.remove(&old);
            self.batch.deletes.push(old);
        }
    }

    /// Whether every record of the current segment has been removed (and
    /// it holds any), so rolling it would reclaim its space.
    fn current_reclaimable(&self) -> bool {
        self.cur_len > 0 && self.live.get(&self.cur_seg).copied().unwrap_or(0) == 0
    }

    /// Roll the current segment when every record in it has been removed,
    /// so its space is reclaimed too: under load once it holds
    /// [`ROLL_EMPTY_AT`] bytes, and when the store has been quiet for
    /// [`ROLL_QUIET_AFTER`] (the syncer's wait). Rolling whenever the batch
    /// queue is momentarily empty made a paced load (a batch per
    /// millisecond, each acknowledged before the next) create, fsync and
    /// delete a file every few dozen messages.
    fn roll_if_reclaimable(&mut self, quiet: bool) {
        if self.current_reclaimable() && (quiet || self.cur_len >= ROLL_EMPTY_AT) {
            self.roll();
        }
    }
}

/// Bytes an all-acknowledged current segment may hold under load before it
/// is rolled and reclaimed.
pub const ROLL_EMPTY_AT: u64 = 1 << 20;

/// How long the store must have had nothing to write before an
/// all-acknowledged current segment is rolled and reclaimed.
pub const ROLL_QUIET_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// Store statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Segment files on disk.
    pub segments: usize,
    /// Live records.
    pub live: u64,
    /// Batches whose write or sync failed (each is retried).
    pub write_errors: u64,
    /// The last write failed and has not yet been retried successfully.
    pub failing: bool,
}

/// The store of one vhost.
pub struct Store {
    dir: PathBuf,
    inner: Mutex<Inner>,
    cond: Condvar,
    stop: AtomicBool,
    synced: Arc<SyncSignal>,
    write_errors: AtomicU64,
    failing: AtomicBool,
}

/// How often acknowledgement files are fsynced under load.
pub const ACK_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest an acknowledgement waits in memory to be written with the next
/// batch of records, when no record comes: an acknowledgement wakes the
/// syncer only when it is idle, not once per batch of consumer acks.
pub const ACK_WRITE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Longest the syncer, once it sees records pending, waits for a connection
/// that is still handling what it read (the rest of a burst of publishes)
/// before it writes and syncs anyway: one `fdatasync` covers the whole
/// burst, and no confirm is held longer than this for it. (An idle syncer
/// is woken by the release of the hold, not by held appends: a connection
/// holds the store only while it handles bytes already read, never across
/// a wait.)
pub const GROUP_COMMIT_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// A connection handling what it read from its client, held on the store
/// (see [`Store::hold`]); dropping it releases the hold.
pub struct StoreHold(Arc<Store>);

impl Drop for StoreHold {
    fn drop(&mut self) {
        let mut g = self.0.inner.lock();
        g.holds -= 1;
        g.released += 1;
        let wake = g.waiting != Waiting::Busy && !g.batch.msgs.is_empty();
        drop(g);
        if wake {
            self.0.cond.notify_one();
        }
    }
}

fn seg_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08}.seg"))
}
fn ack_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08}.ack"))
}

/// Room a new chunk of the pending batch starts with: a paced burst's
/// records fit without the chunk growing.
const CHUNK_FIRST: usize = 4096;

/// The length of `msg`'s record for `queue` (see [`put_record`]).
fn record_len(queue: &str, msg: &Message) -> usize {
    8 + 1
        + 2
        + queue.len()
        + 8
        + 1
        + msg.exchange.len()
        + 1
        + msg.routing_key.len()
        + 4
        + msg.raw_properties().len()
        + 4
        + msg.body().len()
}

/// Append `msg`'s record for `queue` to `out`: `len` bytes (its
/// [`record_len`]), the length and CRC first, filled in once the payload
/// after them is written.
fn put_record(
    out: &mut Vec<u8>,
    len: usize,
    queue: &str,
    msg: &Message,
    expires_ms: u64,
    flags: u8,
) {
    let (props, body) = (msg.raw_properties(), msg.body());
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&[0; 8]);
    out.push(flags);
    out.extend_from_slice(&(queue.len() as u16).to_le_bytes());
    out.extend_from_slice(queue.as_bytes());
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.push(msg.exchange.len() as u8);
    out.extend_from_slice(msg.exchange.as_bytes());
    out.push(msg.routing_key.len() as u8);
    out.extend_from_slice(msg.routing_key.as_bytes());
    out.extend_from_slice(&(props.len() as u32).to_le_bytes());
    out.extend_from_slice(props);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let written = out.len() - start;
    debug_assert_eq!(written, len);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&((written - 8) as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl Store {
    /// Open the store in `dir` (created if missing) and read back every live
    /// record. Appends go to a fresh segment. Spawns the syncer thread.
    pub fn open(dir: &Path) -> Result<(Arc<Store>, Vec<Recovered>), BrokerError> {
        let mut recovered = Vec::new();
        let store = Store::open_with(dir, |r| recovered.push(r))?;
        Ok((store, recovered))
    }

    /// [`Store::open`], handing each live record to `on_record` as its
    /// segment is read, so recovery holds one segment's bytes at a time.
    pub fn open_with(
        dir: &Path,
        mut on_record: impl FnMut(Recovered),
    ) -> Result<Arc<Store>, BrokerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BrokerError::io(format!("create {}", dir.display()), e))?;
        let mut segs = Vec::new();
        let mut ack_files = Vec::new();
        for e in std::fs::read_dir(dir)
            .map_err(|e| BrokerError::io(format!("read {}", dir.display()), e))?
            .filter_map(|e| e.ok())
        {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u32>().ok())
            {
                segs.push(n);
            } else if let Some(n) = name
                .strip_suffix(".ack")
                .and_then(|n| n.parse::<u32>().ok())
            {
                ack_files.push(n);
            }
        }
        segs.sort_unstable();
        // An acknowledgement file without its segment (the segment's
        // deletion got there first) marks nothing; removed, so a new segment
        // with its number cannot inherit its marks.
        for n in &ack_files {
            if segs.binary_search(n).is_err() {
                let _ = std::fs::remove_file(ack_path(dir, *n));
            }
        }
        let mut live = FxHashMap::default();
        let mut empty = Vec::new();
        for &seg in &segs {
            let n = recover_segment(dir, seg, &mut on_record)?;
            if n == 0 {
                empty.push(seg);
            } else {
                live.insert(seg, n);
            }
        }
        for seg in empty {
            let _ = std::fs::remove_file(seg_path(dir, seg));
            let _ = std::fs::remove_file(ack_path(dir, seg));
        }
        let cur_seg = segs.iter().chain(&ack_files).max().map_or(1, |s| s + 1);
        let synced = SyncSignal::new();
        let store = Arc::new(Store {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                inflight: Vec::new(),
                cur_seg,
                cur_len: 0,
                live,
                batch: Batch::default(),
                written_seq: 0,
                holds: 0,
                released: 0,
                waiting: Waiting::Busy,
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            synced,
            write_errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        });
        let s2 = store.clone();
        std::thread::Builder::new()
            .name("shoal-store-sync".into())
            .spawn(move || syncer::run(&s2))
            .map_err(|e| BrokerError::io("spawn store syncer", e))?;
        Ok(store)
    }

    /// Append `msg` for `queue`; returns its location and the write sequence
    /// number to wait for (see [`Store::synced`]).
    pub fn append(&self, queue: &str, msg: &Message, expires_ms: u64) -> (StoreRef, u64) {
        self.append_record(queue, msg, expires_ms, 0)
    }

    /// Append a transient message paged out of memory: readable with
    /// [`Store::read`] but not recovered after a restart.
    pub fn append_transient(&self, queue: &str, msg: &Message) -> StoreRef {
        self.append_record(queue, msg, 0, FLAG_TRANSIENT).0
    }

    fn append_record(
        &self,
        queue: &str,
        msg: &Message,
        expires_ms: u64,
        flags: u8,
    ) -> (StoreRef, u64) {
        let len = record_len(queue, msg);
        let mut g = self.inner.lock();
        if g.cur_len > 0 && g.cur_len + len as u64 > SEGMENT_BYTES {
            g.roll();
        }
        let sref = StoreRef {
            seg: g.cur_seg,
            pos: g.cur_len as u32,
        };
        g.cur_len += len as u64;
        *g.live.entry(sref.seg).or_insert(0) += 1;
        // Encoded in place at the end of the batch: no copy of the record.
        let chunk = g.batch.chunk_for(sref.seg, u64::from(sref.pos));
        put_record(chunk, len, queue, msg, expires_ms, flags);
        g.written_seq += 1;
        let seq = g.written_seq;
        // A held store is synced when the hold is released (group commit).
        let wake = g.holds == 0 && g.waiting != Waiting::Busy;
        drop(g);
        if wake {
            self.cond.notify_one();
        }
        (sref, seq)
    }

    /// Hold the store while a connection handles what it read from its
    /// client: records appended meanwhile are written and synced together
    /// once the hold is dropped (at the end of the read, or before the
    /// connection waits for anything), so a burst of publishes costs one
    /// `fdatasync` and one wake-up of the syncer, not one per message or
    /// per part of the burst. The syncer, once it sees records, waits for
    /// a release at most [`GROUP_COMMIT_MAX`]. Drop the hold before
    /// waiting for anything: an idle syncer is not woken by held appends.
    pub fn hold(self: &Arc<Self>) -> StoreHold {
        self.inner.lock().holds += 1;
        StoreHold(self.clone())
    }

    /// Mark a record removed (acked, dropped, expired, purged). A segment
    /// left with no live record is deleted; the current one is rolled first
    /// by the syncer (see [`Inner::roll_if_reclaimable`]).
    pub fn ack(&self, r: StoreRef) {
        let mut g = self.inner.lock();
        let left = match g.live.get_mut(&r.seg) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            // Its segment is gone already: writing an ack file for it would
            // leave an orphan that could mark a later segment's records.
            None => return,
        };
        Batch::push(&mut g.batch.acks, r.seg, &r.pos.to_le_bytes());
        let mut wake = g.waiting == Waiting::Idle;
        if left == 0 && r.seg != g.cur_seg {
            g.live.remove(&r.seg);
            g.batch.deletes.push(r.seg);
            // Reclaimed space is given back at once.
            wake = g.waiting != Waiting::Busy;
        }
        g.written_seq += 1;
        drop(g);
        // Acknowledgements need no sync before anything is sent (a lost
        // one means a redelivery): they wake an idle syncer only, and are
        // otherwise written with the next records or within ACK_WRITE_AFTER.
        if wake {
            self.cond.notify_one();
        }
    }

    /// Read a live record back (for messages paged out of memory): from the
    /// pending batch, the batch being written, or its segment file.
    pub fn read(&self, r: StoreRef) -> Option<Message> {
        let g = self.inner.lock();
        let from_mem = g
            .batch
            .msgs
            .iter()
            .chain(g.inflight.iter())
            .find_map(|c| c.find(r))
            .map(<[u8]>::to_vec);
        drop(g);
        let rec = match from_mem {
            Some(b) => b,
            None => {
                use std::os::unix::fs::FileExt;
                let f = File::open(seg_path(&self.dir, r.seg)).ok()?;
                let mut head = [0u8; 8];
                f.read_exact_at(&mut head, u64::from(r.pos)).ok()?;
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let mut rec = vec![0u8; 8 + len];
                f.read_exact_at(&mut rec, u64::from(r.pos)).ok()?;
                rec
            }
        };
        let len = u32::from_le_bytes(rec.get(..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(rec.get(4..8)?.try_into().ok()?);
        let payload = rec.get(8..8 + len)?;
        if crc32fast::hash(payload) != crc {
            return None;
        }
        decode_payload(payload).map(|(_, m, _, _)| m)
    }

    /// A receiver of the highest sequence number known to be on disk.
    pub fn synced(&self) -> tokio::sync::watch::Receiver<u64> {
        self.synced.subscribe()
    }

    /// The highest sequence number known to be on disk, now.
    pub fn synced_seq(&self) -> u64 {
        self.synced.seen()
    }

    /// Segment count and live records.
    pub fn stats(&self) -> StoreStats {
        let g = self.inner.lock();
        StoreStats {
            segments: g.live.len(),
            live: g.live.values().sum(),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
        }
    }

    /// Write and fsync everything pending, then stop the syncer.
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cond.notify_all();
        let target = self.inner.lock().written_seq;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.synced.reported() < target && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cond.notify_all();
    }
}

fn recover_segment(
    dir: &Path,
    seg: u32,
    on_record: &mut impl FnMut(Recovered),
) -> Result<u64, BrokerError> {
    use std::io::Read;
    let file = File::open(seg_path(dir, seg))
        .map_err(|e| BrokerError::io(format!("read segment {seg}"), e))?;
    let size = file
        .metadata()
        .map_err(|e| BrokerError::io(format!("read segment {seg}"), e))?
        .len();
    // Read record by record: recovery holds one record, not the segment.
    let mut data = std::io::BufReader::with_capacity(1 << 20, file);
    let acked: FxHashSet<u32> = match std::fs::read(ack_path(dir, seg)) {
        Ok(a) => a
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Err(_) => FxHashSet::default(),
    };
    let mut pos = 0u64;
    let mut live = 0;
    let mut payload = Vec::new();
    while pos + 8 <= size {
        let mut head = [0u8; 8];
        if data.read_exact(&mut head).is_err() {
            tracing::warn!(
                seg,
                pos,
                "unreadable record header, rest of segment ignored"
            );
            break;
        }
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 {
            // The zero fill after the last record (no record is empty).
            break;
        }
        if pos + 8 + len > size {
            tracing::warn!(seg, pos, "torn record at segment tail, ignored");
            break;
        }
        payload.resize(len as usize, 0);
        if data.read_exact(&mut payload).is_err() {
            tracing::warn!(seg, pos, "unreadable record, rest of segment ignored");
            break;
        }
        if crc32fast::hash(&payload) != crc {
            tracing::warn!(
                seg,
                pos,
                "record checksum mismatch, rest of segment ignored"
            );
            break;
        }
        let here = pos as u32;
        pos += 8 + len;
        let payload = &payload[..];
        if acked.contains(&here) {
            continue;
        }
        match decode_payload(payload) {
            Some((_, _, _, flags)) if flags & FLAG_TRANSIENT != 0 => {}
            Some((queue, msg, expires_ms, _)) => {
                live += 1;
                on_record(Recovered {
                    queue,
                    msg,
                    expires_ms,
                    sref: StoreRef { seg, pos: here },
                });
            }
            None => tracing::warn!(seg, pos = here, "undecodable record skipped"),
        }
    }
    Ok(live)
}

fn decode_payload(p: &[u8]) -> Option<(String, Message, u64, u8)> {
    let mut r = Reader { p, at: 0 };
    let flags = r.take(1)?[0];
    let qlen = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
    let queue = String::from_utf8(r.take(qlen)?.to_vec()).ok()?;
    let expires_ms = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let exlen = r.take(1)?[0] as usize;
    let exchange = String::from_utf8(r.take(exlen)?.to_vec()).ok()?;
    let rklen = r.take(1)?[0] as usize;
    let routing_key = String::from_utf8(r.take(rklen)?.to_vec()).ok()?;
    let plen = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let props = r.take(plen)?;
    let blen = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let body = r.take(blen)?;
    Some((
        queue,
        Message::from_raw(&exchange, &routing_key, props, body)?,
        expires_ms,
        flags,
    ))
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.p.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::ShortString;
    use bytes::Bytes;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn msg(body: &str) -> Message {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("text/plain"));
        Message::new("ex", "rk", &props, body.as_bytes())
    }

    async fn wait(store: &Store, seq: u64) {
        let mut rx = store.synced();
        while *rx.borrow_and_update() < seq {
            rx.changed().await.unwrap();
        }
    }

    #[tokio::test]
    async fn append_ack_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (s, rec) = Store::open(dir.path()).unwrap();
        assert!(rec.is_empty());
        let (a, _) = s.append("q", &msg("one"), 0);
        let (b, _) = s.append("q", &msg("two"), 7);
        // Readable while still in the pending batch...
        assert_eq!(s.read(b).map(|m| m.body().to_vec()), Some(b"two".to_vec()));
        s.ack(a);
        let t = s.append_transient("q", &msg("paged"));
        assert_eq!(
            s.read(t).map(|m| m.body().to_vec()),
            Some(b"paged".to_vec())
        );
        let (_, seq) = s.append("q2", &msg("three"), 0);
        wait(&s, seq).await;
        // ...and from the file once written.
        assert_eq!(s.read(b).map(|m| m.body().to_vec()), Some(b"two".to_vec()));
        s.close();
        drop(s);
        let (_s2, rec) = Store::open(dir.path()).unwrap();
        let bodies: Vec<_> = rec
            .iter()
            .map(|r| {
                (
                    r.queue.as_str(),
                    Bytes::copy_from_slice(r.msg.body()),
                    r.expires_ms,
                )
            })
            .collect();
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert_eq!(bodies[0], ("q", Bytes::from("two"), 7));
        assert_eq!(bodies[1].0, "q2");
        assert_eq!(*rec[0].msg.properties().delivery_mode(), Some(2));
        assert!(rec[0].msg.persistent());
    }

    async fn wait_bounded(store: &Store, seq: u64) {
        let limit = std::time::Duration::from_secs(5);
        tokio::time::timeout(limit, wait(store, seq))
            .await
            .expect("the record was never synced");
    }

    /// Group commit: records appended while connections hold the store
    /// are synced once the holds are let go, whether the syncer was idle
    /// or busy with an earlier batch, and records appended by others
    /// meanwhile go with them.
    #[tokio::test]
    async fn a_held_store_syncs_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        for round in 0..20 {
            let hold = s.hold();
            let other = (round % 2 == 0).then(|| s.hold());
            let (_, first) = s.append("q", &msg("a"), 0);
            let (_, seq) = s.append("q", &msg("b"), 0);
            assert!(seq > first);
            drop(other);
            if round % 3 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            drop(hold);
            wait_bounded(&s, seq).await;
        }
        // While one connection holds the store, the records of the
        // syncer's next batch wait for it at most GROUP_COMMIT_MAX.
        let hold = s.hold();
        let (_, a) = s.append("q", &msg("a"), 0);
        drop(hold);
        let _kept = s.hold();
        let (_, b) = s.append("q", &msg("b"), 0);
        wait_bounded(&s, a.max(b)).await;
    }

    /// Acknowledgements alone do not wake a busy syncer, but an idle one
    /// writes them (within ACK_WRITE_AFTER) with no record to carry them.
    #[tokio::test]
    async fn acknowledgements_alone_reach_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let (a, seq) = s.append("q", &msg("a"), 0);
        let (_, seq2) = s.append("q", &msg("b"), 0);
        wait_bounded(&s, seq.max(seq2)).await;
        // Let the syncer go idle, then acknowledge.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s.ack(a);
        let path = ack_path(dir.path(), a.seg);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(&path).map_or(0, |m| m.len()) < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "the acknowledgement was never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Segments are zero-filled ahead of their records (so a sync does not
    /// grow the file); recovery finds every record and stops at the fill,
    /// with a restart in the middle and records written across it.
    #[tokio::test]
    async fn zero_filled_segments_recover_every_record_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut last = 0;
        let mut first = None;
        for i in 0..3000 {
            let (r, seq) = s.append("q", &msg(&format!("m{i}")), 0);
            first.get_or_insert(r);
            last = seq;
        }
        wait_bounded(&s, last).await;
        // The fill is written once the syncer has nothing else to do.
        let seg = first.unwrap().seg;
        let records = s.inner.lock().cur_len;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let on_disk = std::fs::metadata(seg_path(dir.path(), seg)).unwrap().len();
            if on_disk > records {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the segment is not zero-filled past its records ({on_disk} bytes for {records})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        s.close();
        drop(s);
        let (s2, rec) = Store::open(dir.path()).unwrap();
        let bodies: Vec<String> = rec
            .iter()
            .map(|r| String::from_utf8(r.msg.body().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies, want);
        // A second life appends to a new segment; both are recovered.
        let (_, seq) = s2.append("q", &msg("after"), 0);
        wait_bounded(&s2, seq).await;
        s2.close();
        drop(s2);
        let (_, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(rec.len(), 3001);
        assert_eq!(rec[3000].msg.body(), b"after");
    }

    #[tokio::test]
    async fn torn_tail_is_ignored_and_fully_acked_segments_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let (a, seq) = s.append("q", &msg("x"), 0);
        wait(&s, seq).await;
        s.close();
        drop(s);
        // Simulate a crash mid-write: a partial record at the tail.
        let p = seg_path(dir.path(), a.seg);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (s2, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(rec.len(), 1);
        s2.ack(rec[0].sref);
        // Old segment is not current, so acking its last record deletes it.
        let (_, seq) = s2.append("q", &msg("y"), 0);
        wait(&s2, seq).await;
        assert!(!p.exists(), "segment should be reclaimed");
    }
}
