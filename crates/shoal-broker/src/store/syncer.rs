//! The store's syncer thread: takes the pending [`Batch`], writes its
//! records at the positions [`Store::append`] gave them, appends its
//! acknowledgements, fsyncs the segments, and only then advances
//! [`Store::synced`] (publisher confirms wait on it) and deletes the
//! segments the batch reclaimed.
//!
//! Group commit: while a connection still handles a burst it read from its
//! client ([`Store::hold`]), the syncer waits for the rest of the burst
//! (bounded by [`GROUP_COMMIT_MAX`]) so one `fdatasync` covers it; with no
//! hold, records are written at once. Acknowledgements alone are not worth
//! a wake-up: they go with the next records, or after [`ACK_WRITE_AFTER`].
//!
//! Segments are zero-filled ahead of their records ([`ZERO_AHEAD`]), as
//! PostgreSQL does for its WAL: an `fdatasync` of records written inside a
//! file's length only flushes their data, where one that grows the file
//! must also write its inode (one more device write and wait per sync, a
//! quarter of a sync's CPU time on ext4). The fill is written and synced
//! only when the syncer has nothing else to write, so it never lengthens
//! the sync a confirm waits for; under a load that keeps the syncer busy
//! the file grows with its records as before. Recovery stops at the zero
//! tail (no record has length 0).
//!
//! A batch is all or nothing. When a write or an fsync fails (ENOSPC, EIO):
//! every file the batch touched is truncated back to its length before the
//! batch, so no torn record is left in the middle of a segment and nothing
//! the kernel may have dropped after a failed fsync is trusted; `synced`
//! does not move, so nothing in the batch is confirmed; and the batch goes
//! back in front of what was appended since, to be retried with backoff.
//! Acknowledgements and deletions are retried with it, never dropped. While
//! writes fail the store reports [`StoreStats::failing`], which raises the
//! broker's disk alarm and blocks publishers.

use super::{
    ack_path, seg_path, Batch, Chunk, Inner, Store, Waiting, ACK_SYNC_EVERY, ACK_WRITE_AFTER,
    GROUP_COMMIT_MAX, ROLL_QUIET_AFTER,
};
use parking_lot::MutexGuard;
use rustc_hash::{FxHashMap, FxHashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait before a failed batch is retried; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between retries of a failed batch.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Retries of a failing batch once the store is closing, before giving up
/// on records that were never confirmed.
const RETRIES_AT_CLOSE: u32 = 5;

/// How far ahead of its records a segment file is zero-filled: one inode
/// write per this many bytes of records instead of one per sync. Small, so
/// that a batch arriving while a fill is synced waits little for it (256
/// KiB fills raised the p99 latency at saturation from 0.3 to 1.5 ms).
const ZERO_AHEAD: u64 = 32 << 10;

/// An open segment or acknowledgement file and the length of what has been
/// written to it (the file itself may hold more after a failed write, until
/// it is truncated back).
struct Tracked {
    file: File,
    len: u64,
    /// Where the file ends: `len` plus any zero fill after it (never below
    /// `len`).
    zeroed: u64,
}

impl Tracked {
    /// Zero-fill the file from `len` to a little past it and sync the fill,
    /// unless it already extends far enough. Best effort: on a failure (a
    /// nearly full disk) the fill is cut off again, so records get the room.
    fn fill_ahead(&mut self) {
        if self.zeroed >= self.len + ZERO_AHEAD / 4 {
            return;
        }
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let target = (self.len / ZERO_AHEAD + 2) * ZERO_AHEAD;
        let mut at = self.zeroed;
        let mut filled = true;
        while at < target && filled {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            filled = self.file.write_all_at(&ZEROS[..n], at).is_ok();
            at += n as u64;
        }
        if filled && self.file.sync_data().is_ok() {
            self.zeroed = target;
        } else {
            let _ = self.file.set_len(self.len);
            self.zeroed = self.len;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Segment,
    Acks,
}

/// The files the syncer has open.
struct Files {
    dir: PathBuf,
    open: FxHashMap<(Kind, u32), Tracked>,
    /// Acknowledgement files written since they were last fsynced.
    acks_dirty: FxHashSet<u32>,
    acks_synced_at: Instant,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            open: FxHashMap::default(),
            acks_dirty: FxHashSet::default(),
            acks_synced_at: Instant::now(),
        }
    }

    /// The open file, opened (and created) if needed; `created` is set when
    /// a new file appeared in the directory.
    fn file(&mut self, kind: Kind, seg: u32, created: &mut bool) -> io::Result<&mut Tracked> {
        use std::collections::hash_map::Entry;
        match self.open.entry((kind, seg)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let path = match kind {
                    Kind::Segment => seg_path(&self.dir, seg),
                    Kind::Acks => ack_path(&self.dir, seg),
                };
                let existed = path.exists();
                let file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .write(true)
                    .truncate(false)
                    .open(&path)?;
                let len = file.metadata()?.len();
                *created |= !existed;
                Ok(e.insert(Tracked {
                    file,
                    len,
                    zeroed: len,
                }))
            }
        }
    }

    /// Write and sync `batch`, all or nothing: on an error every file it
    /// touched is cut back to where it was.
    fn write(&mut self, batch: &Batch) -> io::Result<()> {
        let mut before: FxHashMap<(Kind, u32), u64> = FxHashMap::default();
        let r = self.write_unguarded(batch, &mut before);
        if r.is_err() {
            for (key, len) in before {
                if let Some(t) = self.open.get_mut(&key) {
                    t.len = len;
                    t.zeroed = len;
                    if let Err(e) = t.file.set_len(len) {
                        // The retry writes at the same positions, so what is
                        // left past `len` is overwritten before it is synced.
                        tracing::warn!(error = %e, seg = key.1, "could not truncate after a failed write");
                    }
                }
            }
        }
        r
    }

    fn write_unguarded(
        &mut self,
        batch: &Batch,
        before: &mut FxHashMap<(Kind, u32), u64>,
    ) -> io::Result<()> {
        let mut created = false;
        let mut segs = Vec::new();
        for c in &batch.msgs {
            let t = self.file(Kind::Segment, c.seg, &mut created)?;
            before.entry((Kind::Segment, c.seg)).or_insert(t.len);
            t.file.write_all_at(&c.bytes, c.start)?;
            t.len = t.len.max(c.start + c.bytes.len() as u64);
            t.zeroed = t.zeroed.max(t.len);
            if !segs.contains(&c.seg) {
                segs.push(c.seg);
            }
        }
        let deleting: FxHashSet<u32> = batch.deletes.iter().copied().collect();
        for (seg, bytes) in &batch.acks {
            if deleting.contains(seg) {
                continue;
            }
            let t = self.file(Kind::Acks, *seg, &mut created)?;
            before.entry((Kind::Acks, *seg)).or_insert(t.len);
            t.file.write_all_at(bytes, t.len)?;
            t.len += bytes.len() as u64;
            self.acks_dirty.insert(*seg);
        }
        for seg in segs {
            if let Some(t) = self.open.get(&(Kind::Segment, seg)) {
                t.file.sync_data()?;
            }
        }
        if created {
            // A new file's name must be durable too, or a crash can lose the
            // whole file with its confirmed records.
            File::open(&self.dir)?.sync_all()?;
        }
        if self.acks_synced_at.elapsed() >= ACK_SYNC_EVERY {
            self.sync_acks();
        }
        Ok(())
    }

    /// Fsync the acknowledgement files written since their last sync. They
    /// are synced at most every [`ACK_SYNC_EVERY`] (and when the store is
    /// quiet or closing): an acknowledgement lost in a crash means a
    /// redelivery flagged `redelivered`, never a lost message, so it does not
    /// cost an fsync per batch.
    fn sync_acks(&mut self) {
        for seg in std::mem::take(&mut self.acks_dirty) {
            if let Some(t) = self.open.get(&(Kind::Acks, seg)) {
                if let Err(e) = t.file.sync_data() {
                    tracing::error!(error = %e, seg, "acknowledgement file sync failed; after a crash its messages may be redelivered");
                }
            }
        }
        self.acks_synced_at = Instant::now();
    }

    /// Zero-fill segment `seg` ahead of its records ([`Tracked::fill_ahead`]).
    fn fill_ahead(&mut self, seg: u32) {
        if let Some(t) = self.open.get_mut(&(Kind::Segment, seg)) {
            t.fill_ahead();
        }
    }

    /// Delete reclaimed segments and their acknowledgement files.
    fn reclaim(&mut self, segs: &[u32]) {
        for &seg in segs {
            self.open.remove(&(Kind::Segment, seg));
            self.open.remove(&(Kind::Acks, seg));
            self.acks_dirty.remove(&seg);
            for path in [seg_path(&self.dir, seg), ack_path(&self.dir, seg)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "could not delete a reclaimed segment file");
                    }
                }
            }
        }
    }
}

/// Wait, with the store locked, until there is a batch to write: records
/// or deletions at once, unless a connection still holds the store (then
/// until a hold is released or [`GROUP_COMMIT_MAX`] has passed: group
/// commit); acknowledgements alone within [`ACK_WRITE_AFTER`]. While
/// nothing is pending, pending acknowledgement syncs and the roll of an
/// all-acknowledged segment are done once the store is quiet. False once the
/// store is closed and nothing is left to write.
fn wait_for_work(store: &Store, g: &mut MutexGuard<'_, Inner>, files: &mut Files) -> bool {
    let mut group: Option<(Instant, u64)> = None;
    let mut acks_since: Option<Instant> = None;
    let work = loop {
        let stop = store.stop.load(Ordering::SeqCst);
        if !g.batch.msgs.is_empty() || !g.batch.deletes.is_empty() {
            if stop || g.holds == 0 {
                break true;
            }
            let (since, released) = *group.get_or_insert((Instant::now(), g.released));
            let left = (since + GROUP_COMMIT_MAX).saturating_duration_since(Instant::now());
            if g.released != released || left.is_zero() {
                break true;
            }
            g.waiting = Waiting::Group;
            store.cond.wait_for(g, left);
            continue;
        }
        if !g.batch.acks.is_empty() {
            let since = *acks_since.get_or_insert_with(Instant::now);
            let left = (since + ACK_WRITE_AFTER).saturating_duration_since(Instant::now());
            if stop || left.is_zero() {
                break true;
            }
            g.waiting = Waiting::Acks;
            store.cond.wait_for(g, left);
            continue;
        }
        if stop {
            break false;
        }
        // Once things are quiet: sync pending acknowledgements, and roll an
        // all-acknowledged segment so its file is deleted.
        g.waiting = Waiting::Idle;
        let roll_due = g.current_reclaimable();
        if files.acks_dirty.is_empty() && !roll_due {
            store.cond.wait(g);
            continue;
        }
        let wait = if roll_due {
            ROLL_QUIET_AFTER
        } else {
            ACK_SYNC_EVERY
        };
        let r = store.cond.wait_for(g, wait);
        if r.timed_out() && g.batch.is_empty() {
            g.roll_if_reclaimable(true);
            if !files.acks_dirty.is_empty() {
                g.waiting = Waiting::Busy;
                MutexGuard::unlocked(g, || files.sync_acks());
            }
        }
    };
    g.waiting = Waiting::Busy;
    work
}

/// The syncer thread's loop, until the store is closed.
pub(super) fn run(store: &Arc<Store>) {
    let mut files = Files::new(&store.dir);
    let mut backoff = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        let (batch, seq) = {
            let mut g = store.inner.lock();
            if !wait_for_work(store, &mut g, &mut files) {
                break;
            }
            let batch = std::mem::take(&mut g.batch);
            // Keep the records readable (Store::read) until they are in their files.
            g.inflight = batch
                .msgs
                .iter()
                .map(|c| Chunk {
                    seg: c.seg,
                    start: c.start,
                    bytes: c.bytes.clone(),
                })
                .collect();
            (batch, g.written_seq)
        };
        match files.write(&batch) {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "message store writes succeed again; held confirms are sent"
                    );
                }
                failures = 0;
                backoff = RETRY_FIRST;
                store.failing.store(false, Ordering::Relaxed);
                files.reclaim(&batch.deletes);
                // Waiters (confirms) care only for a higher sequence: a
                // batch of acknowledgements alone wakes none of them.
                store.synced.advance(seq);
                let mut g = store.inner.lock();
                g.inflight.clear();
                g.roll_if_reclaimable(false);
                // Nothing else to write: fill ahead in the segment that
                // takes the next records (not one just rolled away from).
                let fill = g.batch.msgs.is_empty()
                    && batch.msgs.last().is_some_and(|c| c.seg == g.cur_seg);
                let seg = g.cur_seg;
                drop(g);
                if fill {
                    files.fill_ahead(seg);
                }
            }
            Err(e) => {
                failures += 1;
                store.write_errors.fetch_add(1, Ordering::Relaxed);
                store.failing.store(true, Ordering::Relaxed);
                let records: usize = batch.msgs.iter().map(|c| c.bytes.len()).sum();
                tracing::error!(
                    error = %e,
                    dir = %store.dir.display(),
                    failures,
                    pending_bytes = records,
                    "message store write failed; nothing in it is confirmed, it is retried"
                );
                {
                    let mut g = store.inner.lock();
                    g.inflight.clear();
                    g.batch.prepend(batch);
                }
                if store.stop.load(Ordering::SeqCst) && failures >= RETRIES_AT_CLOSE {
                    tracing::error!(
                        pending_bytes = records,
                        "message store closing with records it could not write; none of them was confirmed"
                    );
                    break;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
    files.sync_acks();
    store.synced.close();
}
