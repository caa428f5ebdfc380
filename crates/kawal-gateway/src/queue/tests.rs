#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    clippy::cast_precision_loss,
    reason = "tests: a failure should stop the test loudly; the measurement is printed"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_store::Sharing;

use super::*;

fn keys() -> Arc<KeyHierarchy> {
    Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()))
}

fn store(dir: &Path, keys: &Arc<KeyHierarchy>) -> Arc<Store> {
    let path = dir.join("store.redb");
    let s = if path.exists() {
        Store::open(&path, keys.clone(), Sharing::Exclusive)
    } else {
        Store::create(&path, keys.clone(), Sharing::Exclusive)
    };
    Arc::new(s.unwrap())
}

fn msg(uid: &str, i: usize, qos: u8) -> Message {
    Message {
        uid: uid.to_owned(),
        topic: format!("kawal/{uid}/up/t"),
        payload: Bytes::from(format!("{i}")),
        qos,
    }
}

async fn submit_all(q: &Queue, msgs: Vec<Message>) -> Vec<Result<(), UplinkRefusal>> {
    let rxs: Vec<_> = msgs.into_iter().map(|m| q.submit(m)).collect();
    let mut out = Vec::new();
    for rx in rxs {
        out.push(rx.await.unwrap());
    }
    out
}

async fn wait_deletes(q: &Queue) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.stats().deletes_pending > 0 {
        assert!(Instant::now() < deadline, "deletes did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn record_round_trips() {
    let q = Queued {
        seq: 42,
        uid: "s-1".into(),
        topic: "kawal/s-1/up/x".into(),
        payload: Bytes::from_static(b"\x00\x01abc"),
        qos: 1,
        enqueued_at: 1_700_000_000_000,
    };
    assert_eq!(decode(&encode(&q).unwrap()).unwrap(), q);
    assert!(decode(&[9, 0]).is_err());
    assert!(decode(&encode(&q).unwrap()[..12]).is_err());
}

#[test]
fn debug_shows_no_payload() {
    let q = Queued {
        seq: 1,
        uid: "s".into(),
        topic: "t".into(),
        payload: Bytes::from_static(b"secret-reading"),
        qos: 1,
        enqueued_at: 0,
    };
    assert!(!format!("{q:?}").contains("secret-reading"));
}

/// G045: DS-1-2 — what was acknowledged survives a restart, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_a_restart_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let st = store(dir.path(), &keys);
    let q = Queue::open(st.clone(), QueueSettings::default()).unwrap();
    let mut msgs = Vec::new();
    for i in 0..300 {
        msgs.push(msg(&format!("s{}", i % 3), i, 1));
    }
    assert!(submit_all(&q, msgs).await.iter().all(Result::is_ok));
    // Acknowledge the first 100, then "crash": drop everything, reopen from disk.
    let first: Vec<u64> = q.peek_batch(100).await.iter().map(|m| m.seq).collect();
    let records = stored_records(&st);
    q.ack(&first);
    wait_deletes(&q).await;
    drop(q);
    drop(st);
    let st = store(dir.path(), &keys);
    let q = Queue::open(st, QueueSettings::default()).unwrap();
    let got = q.peek_batch(1000).await;
    // The 200 not acknowledged, after those acknowledged in a batch that also holds some of
    // them (at least once).
    let expected = expected_after_restart(&records, &first);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), expected);
    let skip = 300 - got.len();
    assert!(skip <= 100);
    for (n, m) in got.iter().enumerate() {
        assert_eq!(m.payload, Bytes::from(format!("{}", n + skip)));
        assert_eq!(m.uid, format!("s{}", (n + skip) % 3));
    }
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    // Sequence numbers continue after the recovered ones, even once all are acked.
    let last = got.last().unwrap().seq;
    q.ack_up_to(last);
    wait_deletes(&q).await;
    assert!(q.is_empty());
    assert!(submit_all(&q, vec![msg("s0", 0, 1)]).await[0].is_ok());
    let again = q.peek_batch(10).await;
    assert_eq!(again.len(), 1);
    assert!(again[0].seq > last);
}

/// G045: DS-1-2 — group commit: one transaction for many messages, not one sync each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_many_messages_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(store(dir.path(), &keys()), QueueSettings::default()).unwrap();
    // One message alone: the cost of one transaction with its sync.
    let t = Instant::now();
    for i in 0..20 {
        assert!(submit_all(&q, vec![msg("one", i, 1)]).await[0].is_ok());
    }
    let single = t.elapsed() / 20;
    let before = q.stats().commits;
    const N: u32 = 10_000;
    let t = Instant::now();
    let msgs: Vec<Message> = (0..N as usize)
        .map(|i| msg(&format!("s{}", i % 8), i, 1))
        .collect();
    let results = submit_all(&q, msgs).await;
    let took = t.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let commits = q.stats().commits - before;
    println!(
        "group commit: {N} messages in {took:?} ({:.0} msg/s) with {commits} transactions; \
         one message alone: {single:?} per transaction",
        f64::from(N) / took.as_secs_f64()
    );
    assert!(commits <= 100, "{commits} transactions for {N} messages");
    assert!(took < single * N / 10, "{took:?} vs {single:?} per sync");
    assert_eq!(q.len(), N as usize + 20);

    // 64 sensors, each waiting for its answer before the next message (as a sensor
    // waiting for its PUBACK): batches form from whatever arrives during a sync.
    let before = q.stats().commits;
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|s| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    q.submit(msg(&format!("p{s}"), i, 1))
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = t.elapsed();
    let commits = q.stats().commits - before;
    println!(
        "group commit, 64 sensors x 100 in lockstep: {took:?} ({:.0} msg/s), {commits} \
         transactions ({:.1} messages each)",
        6400.0 / took.as_secs_f64(),
        6400.0 / commits as f64
    );
    assert!(commits < 6400 / 4, "{commits} transactions");
}

/// G045: DS-1-2 — at the byte limit new messages are refused, not stored and not lost
/// silently; the alarm is raised at 80 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_and_raises_the_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let one = message_size("s", "kawal/s/up/t", 1);
    let settings = QueueSettings {
        max_bytes: one * 10,
        ..QueueSettings::default()
    };
    let q = Queue::open(store(dir.path(), &keys()), settings).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    q.set_alarm_hook(Arc::new(move |on| s2.lock().unwrap().push(on)));
    let results = submit_all(&q, (0..12).map(|i| msg("s", i % 10, 1)).collect()).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(results[10], Err(UplinkRefusal::Full));
    let stats = q.stats();
    assert_eq!(stats.refused_full, 2);
    assert!(stats.high_water_alarm);
    assert_eq!(stats.total_in, 10);
    // Room again once the upstream acknowledges.
    q.ack_up_to(u64::MAX);
    assert!(!q.stats().high_water_alarm);
    assert_eq!(*seen.lock().unwrap(), [true, false]);
    assert!(submit_all(&q, vec![msg("s", 1, 1)]).await[0].is_ok());
    let json = serde_json::to_value(q.stats()).unwrap();
    assert_eq!(json["refused_full"], 2);
}

/// G045: DS-1-2 — drop-oldest (opt-in) makes room by dropping the oldest and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_policy_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let one = message_size("s", "kawal/s/up/t", 1);
    let settings = QueueSettings {
        max_bytes: one * 5,
        when_full: FullPolicy::DropOldest,
        ..QueueSettings::default()
    };
    let q = Queue::open(store(dir.path(), &keys()), settings).unwrap();
    for i in 0..8 {
        assert!(submit_all(&q, vec![msg("s", i, 1)]).await[0].is_ok());
    }
    let got: Vec<Bytes> = q
        .peek_batch(10)
        .await
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got, ["3", "4", "5", "6", "7"].map(Bytes::from));
    assert_eq!(q.stats().dropped_full, 3);
}

/// The seqs of each stored record, in order of their first.
fn stored_records(st: &Store) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    for (key, value) in st.list(TABLE).unwrap() {
        if key.starts_with(BATCH_PREFIX) {
            out.push(
                decode_batch(&value)
                    .unwrap()
                    .iter()
                    .map(|q| q.seq)
                    .collect(),
            );
        } else if key.starts_with(MSG_PREFIX) {
            out.push(vec![decode(&value).unwrap().seq]);
        }
    }
    out.sort_unstable();
    out
}

/// What a restart brings back once `acked` are acknowledged: every message of each record
/// that still holds an unacknowledged one.
fn expected_after_restart(records: &[Vec<u64>], acked: &[u64]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.iter().any(|s| !acked.contains(s)))
        .flatten()
        .copied()
        .collect()
}

/// Every message the store holds, by seq (whatever record it is in).
fn stored_seqs(st: &Store) -> Vec<u64> {
    let mut out = Vec::new();
    for (key, value) in st.list(TABLE).unwrap() {
        if key.starts_with(BATCH_PREFIX) {
            out.extend(decode_batch(&value).unwrap().iter().map(|q| q.seq));
        } else if key.starts_with(MSG_PREFIX) {
            out.push(decode(&value).unwrap().seq);
        }
    }
    out.sort_unstable();
    out
}

/// G045: DS-1-2 — a batch's record leaves the store once every message in it is
/// acknowledged, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_deletes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(dir.path(), &keys());
    let q = Queue::open(st.clone(), QueueSettings::default()).unwrap();
    submit_all(&q, (0..5).map(|i| msg("s", i, 1)).collect()).await;
    submit_all(&q, (5..9).map(|i| msg("s", i, 1)).collect()).await;
    let all: Vec<u64> = q.peek_batch(100).await.iter().map(|m| m.seq).collect();
    assert_eq!(stored_seqs(&st), all);
    // Batch boundaries depend on timing; what must stay follows the records written.
    let records = stored_records(&st);
    for upto in [3, 6] {
        q.ack(&all[..upto]);
        q.ack(&all[..upto]); // twice is harmless
        wait_deletes(&q).await;
        assert_eq!(
            stored_seqs(&st),
            expected_after_restart(&records, &all[..upto])
        );
        assert!(stored_seqs(&st).ends_with(&all[upto..]));
        assert_eq!(q.stats().total_out, upto as u64);
    }
    // Everything: only next-seq remains.
    q.ack_up_to(u64::MAX);
    wait_deletes(&q).await;
    assert!(stored_seqs(&st).is_empty());
    assert_eq!(st.list(TABLE).unwrap().len(), 1);
    assert_eq!(q.stats().total_out, 9);
}

/// G045: DS-1-2 — upstream acknowledgements that race the commit (the bridge sees a batch
/// as its write begins) still leave the store empty once everything is acknowledged, and
/// every publisher hears `Ok` only after its batch is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_before_the_commit_still_delete_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(dir.path(), &keys());
    let q = Queue::open(st.clone(), QueueSettings::default()).unwrap();
    let bridge = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen = 0;
            while seen < 2000 {
                let batch = q.next_batch(after, 64).await;
                after = batch.last().unwrap().seq;
                seen += batch.len();
                q.ack(&batch.iter().map(|m| m.seq).collect::<Vec<_>>());
            }
        })
    };
    let publishers: Vec<_> = (0..20)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    assert!(q.submit(msg(&format!("p{p}"), i, 1)).await.unwrap().is_ok());
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), bridge)
        .await
        .unwrap()
        .unwrap();
    wait_deletes(&q).await;
    assert!(q.is_empty());
    assert_eq!(q.stats().total_out, 2000);
    assert!(stored_seqs(&st).is_empty(), "records left behind");
    assert_eq!(st.list(TABLE).unwrap().len(), 1);
}

/// G045: DS-1-2 — after a crash, messages of a partly acknowledged batch come again (at
/// least once), those of fully acknowledged batches do not, and records of earlier
/// versions (one message each) are still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_acknowledged_batches_come_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let st = store(dir.path(), &keys);
    // A record of an earlier version.
    let old = Queued {
        seq: 1,
        uid: "old".into(),
        topic: "kawal/old/up/t".into(),
        payload: Bytes::from_static(b"legacy"),
        qos: 1,
        enqueued_at: 5,
    };
    st.put_many(
        TABLE,
        &[
            (record_key(1).as_str(), &encode(&old).unwrap()),
            (NEXT_SEQ_KEY, &2u64.to_be_bytes()),
        ],
    )
    .unwrap();
    let q = Queue::open(st.clone(), QueueSettings::default()).unwrap();
    assert_eq!(q.peek_batch(10).await, std::slice::from_ref(&old));
    submit_all(&q, (0..4).map(|i| msg("s", i, 1)).collect()).await;
    submit_all(&q, (4..8).map(|i| msg("s", i, 1)).collect()).await;
    let all: Vec<u64> = q.peek_batch(100).await.iter().map(|m| m.seq).collect();
    assert_eq!(all.len(), 9);
    // Batch boundaries depend on timing; the expectation follows the records written.
    let records = stored_records(&st);
    assert_eq!(records.concat(), all);
    assert_eq!(records[0], [1]);
    q.ack(&all[..7]);
    wait_deletes(&q).await;
    drop(q);
    drop(st);
    let st = store(dir.path(), &keys);
    let q = Queue::open(st, QueueSettings::default()).unwrap();
    let again: Vec<u64> = q.peek_batch(100).await.iter().map(|m| m.seq).collect();
    assert_eq!(again, expected_after_restart(&records, &all[..7]));
    assert!(again.ends_with(&all[7..]));
    assert!(!again.contains(&1));
}

#[test]
fn bad_batch_records_are_refused_not_guessed() {
    let q = |seq| Queued {
        seq,
        uid: "s".into(),
        topic: "kawal/s/up/t".into(),
        payload: Bytes::from_static(b"x"),
        qos: 1,
        enqueued_at: 0,
    };
    let good = encode_batch(&[q(3), q(4)]).unwrap();
    assert_eq!(decode_batch(&good).unwrap(), [q(3), q(4)]);
    assert!(decode_batch(&encode_batch(&[q(4), q(3)]).unwrap()).is_err());
    assert!(decode_batch(&encode_batch(&[q(4), q(4)]).unwrap()).is_err());
    assert!(decode_batch(&encode_batch(&[]).unwrap()).is_err());
    for cut in 0..good.len() {
        assert!(decode_batch(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert!(decode_batch(&long).is_err());
    let mut lying = good.clone();
    lying[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_batch(&lying).is_err());
    let mut version = good;
    version[0] = 1;
    assert!(decode_batch(&version).is_err());
}

/// G045: DS-1-2 — overlapping records in the store stop the queue rather than being
/// guessed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(dir.path(), &keys());
    let q = |seq| Queued {
        seq,
        uid: "s".into(),
        topic: "kawal/s/up/t".into(),
        payload: Bytes::from_static(b"x"),
        qos: 1,
        enqueued_at: 0,
    };
    st.put_many(
        TABLE,
        &[
            (batch_key(3).as_str(), &encode_batch(&[q(3), q(6)]).unwrap()),
            (record_key(5).as_str(), &encode(&q(5)).unwrap()),
        ],
    )
    .unwrap();
    let err = Queue::open(st, QueueSettings::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                reason: "records overlap",
                ..
            }
        ),
        "{err}"
    );
}

/// G045: DS-1-2 — QoS 0 stays in memory, bounded, oldest dropped first and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_is_memory_only_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(dir.path(), &keys());
    let settings = QueueSettings {
        qos0_max_messages: 4,
        ..QueueSettings::default()
    };
    let q = Queue::open(st.clone(), settings).unwrap();
    submit_all(&q, (0..10).map(|i| msg("s", i, 0)).collect()).await;
    // QoS 0 answers at once; wait for the writer to have taken them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.stats().total_in < 10 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got: Vec<Bytes> = q
        .peek_batch(10)
        .await
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got, ["6", "7", "8", "9"].map(Bytes::from));
    assert_eq!(q.stats().dropped_qos0, 6);
    assert!(st.list(TABLE).unwrap().is_empty());
    assert_eq!(q.recent(3).len(), 3);
    assert_eq!(q.recent(3)[2].size, 1);
}

/// G045: DS-1-2 — the bridge's wait wakes when a message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_batch_waits_for_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(store(dir.path(), &keys()), QueueSettings::default()).unwrap();
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.next_batch(0, 10).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    submit_all(&q, vec![msg("s", 7, 1)]).await;
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    let after = got[0].seq;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), q.next_batch(after, 10))
            .await
            .is_err()
    );
}

/// G045: DS-1-2 — how fast acknowledged records leave the disk (one transaction each
/// until kawal-store has a batched delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_delete_rate() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(store(dir.path(), &keys()), QueueSettings::default()).unwrap();
    submit_all(&q, (0..500).map(|i| msg("s", i, 1)).collect()).await;
    let t = Instant::now();
    q.ack_up_to(u64::MAX);
    wait_deletes(&q).await;
    let took = t.elapsed();
    println!(
        "deletes: 500 in {took:?} ({:.0}/s)",
        500.0 / took.as_secs_f64()
    );
}
