//! The message store on a disk that fills up: each test mounts a small
//! tmpfs (so ENOSPC is real, from the kernel), fills it, and checks what a
//! publisher relies on. A "crash" is a copy of the store's files taken at
//! that moment: exactly what `kill -9` leaves behind on tmpfs, whose page
//! cache is the disk.
//!
//! Needs CAP_SYS_ADMIN to mount tmpfs (CI runs as root).

#[path = "common/small_disk.rs"]
mod small_disk;
use small_disk::SmallDisk;

use shoal_broker::message::Message;
use shoal_broker::store::{Store, StoreRef};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store's files copied aside, as a crash at this moment would leave
/// them, and recovered: the queue and body of every live record.
fn recover_copy(dir: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
    let copy = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let (store, recovered) = Store::open(copy.path()).unwrap();
    store.close();
    recovered
        .into_iter()
        .map(|r| (r.queue, r.msg.body().to_vec()))
        .collect()
}

fn msg(i: usize) -> Message {
    let props = amq_protocol::protocol::BasicProperties::default().with_delivery_mode(2);
    let mut body = format!("message {i:06} ").into_bytes();
    body.resize(1024, b'.');
    Message::new("", "q", &props, &body)
}

fn synced(store: &Store) -> u64 {
    *store.synced().borrow()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

fn open(disk: &SmallDisk) -> Arc<Store> {
    let (store, recovered) = Store::open(&disk.store_dir()).unwrap();
    assert!(recovered.is_empty());
    store
}

#[test]
fn records_that_hit_a_full_disk_are_confirmed_only_once_written_and_none_is_torn_or_lost() {
    let disk = SmallDisk::new("confirm", 4 << 20);
    let store = open(&disk);
    disk.fill_leaving(48 << 10);
    // 200 KiB of records into 48 KiB of room: a write fails part-way.
    let appended: Vec<(StoreRef, u64)> = (0..200).map(|i| store.append("q", &msg(i), 0)).collect();
    wait_for("the store to report failing writes", 10, || {
        store.stats().failing
    });
    let at_failure = synced(&store);
    let last_seq = appended.last().unwrap().1;
    assert!(
        at_failure < last_seq,
        "records that did not fit were confirmed"
    );
    // Whatever was confirmed is recoverable now.
    let confirmed_now = appended.iter().filter(|(_, s)| *s <= at_failure).count();
    assert!(recover_copy(&disk.store_dir(), "at-failure").len() >= confirmed_now);

    // Room again, and one more publish: everything is written, in order,
    // with no tear in the segment that would hide what follows it.
    disk.free();
    let (_, seq) = store.append("q", &msg(200), 0);
    wait_for(
        "the retried batch and the new record to be synced",
        10,
        || synced(&store) >= seq,
    );
    assert!(!store.stats().failing);
    assert!(store.stats().write_errors >= 1);
    let got = recover_copy(&disk.store_dir(), "after-retry");
    let want: Vec<(String, Vec<u8>)> = (0..=200)
        .map(|i| ("q".to_string(), msg(i).body().to_vec()))
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "confirmed records lost or duplicated"
    );
    assert!(got == want, "records recovered out of order or altered");
    store.close();
}

#[test]
fn acknowledgements_made_while_the_disk_is_full_survive_and_space_is_reclaimed() {
    let disk = SmallDisk::new("acks", 4 << 20);
    let store = open(&disk);
    let appended: Vec<(StoreRef, u64)> = (0..100).map(|i| store.append("q", &msg(i), 0)).collect();
    let last = appended.last().unwrap().1;
    wait_for("100 records synced", 10, || synced(&store) >= last);

    disk.fill_leaving(0);
    for (r, _) in &appended[..50] {
        store.ack(*r);
    }
    wait_for("the acknowledgement write to fail", 10, || {
        store.stats().failing
    });
    disk.free();
    wait_for("the retry to succeed", 10, || !store.stats().failing);
    let got = recover_copy(&disk.store_dir(), "acks");
    let bodies: HashSet<Vec<u8>> = got.into_iter().map(|(_, b)| b).collect();
    let want: HashSet<Vec<u8>> = (50..100).map(|i| msg(i).body().to_vec()).collect();
    assert_eq!(
        bodies.len(),
        50,
        "acknowledged messages came back after a crash"
    );
    assert!(bodies == want);

    // Acknowledge the rest: the segment being written to is rolled and
    // reclaimed too, so the disk space comes back.
    for (r, _) in &appended[50..] {
        store.ack(*r);
    }
    wait_for("every segment to be reclaimed", 10, || {
        segment_files(&disk.store_dir()) == 0
    });
    assert!(recover_copy(&disk.store_dir(), "reclaimed").is_empty());
    // And the store goes on: a record appended after the roll is kept.
    let (_, seq) = store.append("q", &msg(7), 0);
    wait_for("a record after the roll synced", 10, || {
        synced(&store) >= seq
    });
    assert_eq!(recover_copy(&disk.store_dir(), "after-roll").len(), 1);
    store.close();
}
