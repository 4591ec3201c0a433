//! Multi-process behaviour with real processes and SIGKILL: the test binary
//! re-runs itself with `MMKQ_ROLE` set to act as a child.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mmkit_queue::*;

/// Entry point of every child process.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MMKQ_ROLE") else { return };
    let dir = PathBuf::from(env("MMKQ_DIR"));
    let code = match role.as_str() {
        "producer" => run_producer(&dir),
        "claim_hang" => run_claim_hang(&dir),
        "consumer" => run_consumer(&dir),
        "group_hang" => run_group_hang(&dir),
        "unprivileged_open" => run_unprivileged(&dir),
        "fsize_limited" => run_fsize_limited(&dir),
        "fork_producer" => run_fork_producer(&dir),
        "lease_holder" => run_lease_holder(&dir),
        _ => 2,
    };
    std::process::exit(code);
}

fn run_producer(dir: &Path) -> i32 {
    let id: u32 = env("MMKQ_ID").parse().unwrap();
    let count: u32 = env("MMKQ_COUNT").parse().unwrap();
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(env("MMKQ_ACKS")).unwrap();
    for i in 0..count {
        let msg = payload(id, i);
        let idx = if i % 3 == 0 {
            let mut c = p.claim(msg.len()).unwrap();
            c.copy_from_slice(&msg);
            // Linger between claim and commit so kills land there too.
            std::thread::sleep(Duration::from_micros(20));
            c.commit().unwrap()
        } else {
            p.append(&msg).unwrap()
        };
        // Acknowledged only once append returned; one write per line.
        acks.write_all(format!("{id} {i} {idx}\n").as_bytes()).unwrap();
    }
    0
}

/// Creates a producer (the lease holder), forks, and checks that the child
/// cannot use it while the parent still can. Run in a fresh process: after
/// `fork` only the forking thread exists, and this process has no others.
fn run_fork_producer(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    // SAFETY: this process is single-threaded here (a fresh test binary
    // running one test, no append made yet), so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let refused = matches!(p.append(b"child"), Err(Error::ForkedProducer { .. }));
        // Dropping it would release the parent's lease and slot.
        std::mem::forget(p);
        // SAFETY: ends the forked child without running the parent's exit
        // handlers twice.
        unsafe { libc::_exit(if refused { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let child_refused = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Without a working `membarrier` no producer takes the lease.
    let leased = p.is_exclusive() || !mmkit_sync::barrier::register();
    let parent_ok = leased && p.append(b"parent").is_ok();
    if child_refused && parent_ok { 0 } else { 5 }
}

/// Takes the single-producer lease, appends `one` and `two` under it, says
/// whether it holds the lease, and idles until killed.
fn run_lease_holder(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    p.append(b"one").unwrap();
    p.append(b"two").unwrap();
    println!("exclusive {}", u8::from(p.is_exclusive()));
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run_claim_hang(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    let mut c = p.claim(100).unwrap();
    c[..4].copy_from_slice(b"torn");
    println!("claimed {}", c.index());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run_consumer(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut c = q.cursor("worker").unwrap();
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(env("MMKQ_OUT")).unwrap();
    let total: u64 = env("MMKQ_TOTAL").parse().unwrap();
    let mut n = 0u64;
    loop {
        let Some(r) = c.next_timeout(Some(Duration::from_secs(20))).unwrap() else {
            eprintln!("consumer stuck at {:#x} after {n}: {:?}", c.position(), q.stat().unwrap());
            return 3;
        };
        let (p, i) = verify(r.payload());
        out.write_all(format!("{p} {i}\n").as_bytes()).unwrap();
        n += 1;
        if n % 7 == 0 {
            c.commit().unwrap();
        }
        if p == 0 && i as u64 + 1 == total {
            c.commit().unwrap();
            return 0;
        }
    }
}

fn run_group_hang(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut m = q.group("g").unwrap();
    let r = m.next_timeout(Some(Duration::from_secs(10))).unwrap().unwrap();
    println!("took {}", r.index());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run_unprivileged(dir: &Path) -> i32 {
    // SAFETY: plain syscalls without memory arguments.
    unsafe {
        if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
            eprintln!("could not drop to uid 65534: {}", std::io::Error::last_os_error());
            return 4;
        }
    }
    match Queue::open(dir) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => 0,
        other => {
            eprintln!("unexpected: {other:?}");
            1
        }
    }
}

fn run_fsize_limited(dir: &Path) -> i32 {
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let limit = rustix::process::Rlimit { current: Some(1 << 20), maximum: None };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let e = Queue::options().create(true).segment_size(8 << 20).open(dir).unwrap_err();
    let ok = matches!(&e, Error::Io { op, source, .. } if *op == "preallocate segment" && source.raw_os_error() == Some(libc::EFBIG));
    eprintln!("full disk error: {e}");
    // Nothing half-made is left behind.
    let leftovers = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    if !ok || leftovers != 0 {
        return 1;
    }
    // The disk "fills up" at rollover: appends fail with a clear error,
    // and everything acknowledged before stays readable.
    let limit = rustix::process::Rlimit { current: Some(u64::MAX), maximum: None };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let q = Queue::options().create(true).segment_size(256 << 10).open(dir).unwrap();
    let limit = rustix::process::Rlimit { current: Some(128 << 10), maximum: None };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let mut p = q.producer().unwrap();
    let mut acked = Vec::new();
    let err = loop {
        match p.append(&[acked.len() as u8; 1000]) {
            Ok(i) => acked.push(i),
            Err(e) => break e,
        }
        if acked.len() > 10_000 {
            return 5;
        }
    };
    eprintln!("full disk at rollover after {} appends: {err}", acked.len());
    if !matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG)) {
        return 6;
    }
    let mut r = q.reader(Start::Beginning).unwrap();
    for (k, &i) in acked.iter().enumerate() {
        match r.next() {
            Ok(Some(rec)) if rec.index() == i && rec.payload() == [k as u8; 1000] => {}
            other => {
                eprintln!("message {k} ({i}): {other:?}");
                return 7;
            }
        }
    }
    // The reader reaches the missing next segment: an error, not a hang.
    if !matches!(r.next(), Err(Error::Io { .. })) {
        return 8;
    }
    if q.check().map(|c| c.is_clean()).unwrap_or(false) { 0 } else { 9 }
}

#[test]
fn producers_killed_at_random_lose_no_acknowledged_message() {
    for round in 0..3u64 {
        let mut seed = 0x9e3779b97f4a7c15 ^ ((round + 1) * 7919);
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("q");
        let q = Queue::options().create(true).segment_size(64 << 10).open(&qdir).unwrap();
        let acks = dir.path().join("acks");
        let mut readers: Vec<_> = (0..2).map(|_| q.reader(Start::Beginning).unwrap()).collect();
        let mut cursor = q.cursor("c").unwrap();
        let spawn = |id: u32| {
            child(
                "producer",
                &[
                    ("MMKQ_DIR", qdir.display().to_string()),
                    ("MMKQ_ID", id.to_string()),
                    ("MMKQ_COUNT", "4000".into()),
                    ("MMKQ_ACKS", acks.display().to_string()),
                ],
            )
        };
        let mut kids: Vec<(u32, Kid)> = (1..=3).map(|id| (id, spawn(id))).collect();
        let mut next_id = 4;
        let mut kills = 0;
        let mut got: Vec<Vec<(u32, u32, u64)>> = vec![Vec::new(); 3];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_kill = Instant::now();
        loop {
            // Read a bit with every reader.
            for (k, r) in readers.iter_mut().enumerate() {
                while let Some(rec) = r.next().unwrap() {
                    let (p, i) = verify(rec.payload());
                    got[k].push((p, i, rec.index()));
                }
            }
            while let Some(rec) = cursor.next().unwrap() {
                let (p, i) = verify(rec.payload());
                got[2].push((p, i, rec.index()));
            }
            cursor.commit().unwrap();
            if kills < 3 && last_kill.elapsed() > Duration::from_millis(5 + rng(&mut seed) % 40) {
                let victim = (rng(&mut seed) % kids.len() as u64) as usize;
                // A producer that already exited must have exited cleanly.
                if let Some(status) = kids[victim].1.try_wait().unwrap() {
                    assert!(status.success(), "producer {} failed: {status:?}", kids[victim].0);
                }
                kill(&mut kids[victim].1);
                kids[victim] = (next_id, spawn(next_id));
                next_id += 1;
                kills += 1;
                last_kill = Instant::now();
            }
            // Producers not killed must finish successfully.
            kids.retain_mut(|(id, c)| match c.try_wait().unwrap() {
                None => true,
                Some(status) => {
                    assert!(status.success(), "round {round}: producer {id} failed: {status:?}");
                    false
                }
            });
            if kids.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "producers did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Drain: abandoned claims of killed producers are recovered.
        for (k, r) in readers.iter_mut().enumerate() {
            while let Some(rec) = r.next_timeout(Some(Duration::from_millis(300))).unwrap() {
                let (p, i) = verify(rec.payload());
                got[k].push((p, i, rec.index()));
            }
        }
        while let Some(rec) = cursor.next_timeout(Some(Duration::from_millis(300))).unwrap() {
            let (p, i) = verify(rec.payload());
            got[2].push((p, i, rec.index()));
        }
        let acked = parse_acks(&acks);
        assert!(acked.len() > 3000, "round {round}: only {} acks", acked.len());
        for (k, seen) in got.iter().enumerate() {
            let set: HashSet<(u32, u32, u64)> = seen.iter().copied().collect();
            assert_eq!(set.len(), seen.len(), "reader {k}: duplicates");
            for a in &acked {
                assert!(set.contains(a), "round {round} reader {k}: acknowledged {a:?} lost");
            }
            // Each producer's order is kept.
            let mut last: HashMap<u32, u32> = HashMap::new();
            for &(p, i, _) in seen {
                if let Some(&prev) = last.get(&p) {
                    assert!(i > prev, "reader {k}: producer {p} out of order ({prev} then {i})");
                }
                last.insert(p, i);
            }
            assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "indices increase");
        }
        let report = q.check().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.pending, 0, "{report:?}");
        eprintln!(
            "round {round}: {} acked, {} delivered, {} abandoned claims",
            acked.len(),
            got[0].len(),
            report.abandoned
        );
    }
}

#[test]
fn producer_killed_between_claim_and_commit_blocks_readers_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&qdir).unwrap();
    let mut p = q.producer().unwrap();
    let before = p.append(b"before").unwrap();
    let mut hang = child("claim_hang", &[("MMKQ_DIR", qdir.display().to_string())]);
    let claimed = line_from(&mut hang, "claimed ");
    let after = p.append(b"after").unwrap();
    assert!(claimed > before && after > claimed);

    let mut r = q.reader(Start::Beginning).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    assert_eq!(r.next().unwrap().unwrap().payload(), b"before");
    // While the claimant lives, its claim is waited for, never skipped.
    assert!(r.next_timeout(Some(Duration::from_millis(50))).unwrap().is_none());
    assert!(matches!(q.read_at(claimed, &mut Vec::new()), Err(Error::NoSuchIndex { .. })));
    // The reader can say what blocks it, and `check` calls it pending, not
    // abandoned: the queue is clean.
    let pending = r.pending_claim().unwrap().expect("a claim blocks the reader");
    assert_eq!((pending.index, pending.alive, pending.pid), (claimed, true, Some(hang.id())));
    let report = q.check().unwrap();
    assert!(report.is_clean() && report.pending == 1 && report.dead == 0, "{report:?}");
    assert_eq!(report.claims[0].pid, Some(hang.id()));

    let reader = std::thread::spawn(move || {
        let rec = r.next_timeout(Some(Duration::from_secs(30))).unwrap().unwrap();
        (rec.index(), rec.to_vec(), Instant::now())
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(hang.try_wait().unwrap().is_none(), "claimant exited before the kill");
    let killed_at = Instant::now();
    kill(&mut hang);
    let (index, payload, seen_at) = reader.join().unwrap();
    let blocked = seen_at.duration_since(killed_at);
    eprintln!("reader continued {blocked:?} after the kill");
    assert_eq!((index, payload.as_slice()), (after, &b"after"[..]), "the torn claim is never delivered");
    assert!(blocked < Duration::from_secs(1), "blocked {blocked:?} (target 100 ms)");
    assert!(matches!(q.read_at(claimed, &mut Vec::new()), Err(Error::Abandoned { .. })));
    let report = q.check().unwrap();
    assert_eq!((report.messages, report.abandoned, report.corrupt.len()), (2, 1, 0), "{report:?}");
}

#[test]
fn consumer_killed_and_restarted_on_a_named_cursor_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&qdir).unwrap();
    let out = dir.path().join("seen");
    let total = 6000u64;
    let spawn = || {
        child(
            "consumer",
            &[
                ("MMKQ_DIR", qdir.display().to_string()),
                ("MMKQ_OUT", out.display().to_string()),
                ("MMKQ_TOTAL", total.to_string()),
            ],
        )
    };
    let mut consumer = spawn();
    let mut p = q.producer().unwrap();
    let mut seed = 12345u64;
    let mut restarts = 0;
    for i in 0..total as u32 {
        p.append(&payload(0, i)).unwrap();
        if i % 1000 == 999 && (i as u64) + 1 < total {
            std::thread::sleep(Duration::from_millis(rng(&mut seed) % 10));
            // It cannot be done yet: an exit now is a failure, not a kill.
            assert!(consumer.try_wait().unwrap().is_none(), "consumer exited before the kill");
            kill(&mut consumer);
            restarts += 1;
            consumer = spawn();
        }
    }
    let status = consumer.wait().unwrap();
    assert!(status.success(), "consumer failed: {status:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let seen: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    let set: HashSet<u32> = seen.iter().map(|&(_, i)| i).collect();
    for i in 0..total as u32 {
        assert!(set.contains(&i), "message {i} lost across {restarts} consumer restarts");
    }
    eprintln!(
        "{} deliveries for {total} messages ({} redelivered after {restarts} kills)",
        seen.len(),
        seen.len() - set.len()
    );
}

#[test]
fn dead_group_member_message_is_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&qdir).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..10u32 {
        p.append(&i.to_le_bytes()).unwrap();
    }
    let mut hang = child("group_hang", &[("MMKQ_DIR", qdir.display().to_string())]);
    let taken = line_from(&mut hang, "took ");
    assert!(hang.try_wait().unwrap().is_none(), "group member exited before the kill");
    kill(&mut hang);
    let mut m = q.group("g").unwrap();
    let mut seen = Vec::new();
    while let Some(r) = m.next_timeout(Some(Duration::from_millis(200))).unwrap() {
        seen.push(r.index());
    }
    assert!(seen.contains(&taken), "message {taken} held by the dead member was not redelivered: {seen:?}");
    assert_eq!(seen.len(), 10, "{seen:?}");
}

#[test]
fn permission_denied_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    Queue::create(&qdir).unwrap();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to drop to uid 65534");
        return;
    }
    let mut c = child("unprivileged_open", &[("MMKQ_DIR", qdir.display().to_string())]);
    let status = c.wait().unwrap();
    assert!(status.success(), "the unprivileged child ended with {status:?}");
}

#[test]
fn full_disk_at_queue_creation_and_at_rollover_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let mut c = child("fsize_limited", &[("MMKQ_DIR", qdir.display().to_string())]);
    assert!(c.wait().unwrap().success());
}

#[test]
fn a_producer_created_before_fork_is_refused_in_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    Queue::options().create(true).segment_size(64 << 10).open(&qdir).unwrap();
    let mut c = child("fork_producer", &[("MMKQ_DIR", qdir.display().to_string())]);
    let status = c.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let q = Queue::open(&qdir).unwrap();
    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"parent");
    assert!(r.next().unwrap().is_none());
}

/// Makes `membarrier` fail with ENOSYS in the calling thread (and the
/// threads it starts later), as on a kernel without it or under a seccomp
/// profile that denies it. Other threads of the process are not affected.
fn deny_membarrier_in_this_thread() {
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        // The system call number (offset 0 of `seccomp_data`).
        libc::sock_filter { code: ld, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: jeq, jt: 0, jf: 1, k: libc::SYS_membarrier as u32 },
        libc::sock_filter { code: ret, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
        libc::sock_filter { code: ret, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    // SAFETY: plain prctl calls; the filter program outlives the second
    // one (the kernel copies it), and they only restrict this thread.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _), 0);
    }
}

/// Runs `f` on a thread where `membarrier` fails.
fn without_membarrier<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        deny_membarrier_in_this_thread();
        f()
    })
    .join()
    .unwrap()
}

/// Where `membarrier` fails, the first producer used to take the lease
/// anyway; the second one could not take it away, failed, and left the
/// revoking bit set for good, so that no producer could ever register on
/// the queue again, even after the first was gone. Now no producer takes
/// the lease there, and producers come and go freely.
#[test]
fn without_membarrier_producers_register_beside_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    // Opened here, so the process registers for `membarrier` as usual:
    // only the thread below is denied it.
    let q = Queue::options().create(true).segment_size(1 << 20).open(&qdir).unwrap();
    let q2 = q.clone();
    let (second, later) = without_membarrier(move || {
        let mut p1 = q2.producer().unwrap();
        p1.append(b"one").unwrap();
        assert!(!p1.is_exclusive(), "the lease taken where nobody could take it away");
        let second = q2.producer().map(|mut p| p.append(b"two").map(|_| ())).map_err(|e| e.to_string());
        p1.append(b"three").unwrap();
        drop(p1);
        let later = q2.producer().map(|mut p| p.append(b"four").map(|_| ())).map_err(|e| e.to_string());
        (second.map(|r| r.is_ok()), later.map(|r| r.is_ok()))
    });
    assert_eq!((second, later), (Ok(true), Ok(true)));
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push(rec.to_vec());
    }
    assert_eq!(got, [&b"one"[..], b"two", b"three", b"four"]);
}

/// A producer whose `membarrier` fails cannot take the lease from a live
/// holder: an error that leaves the lease word as it was (the holder keeps
/// appending under it); once the holder has let go, it registers.
#[test]
fn without_membarrier_a_live_holders_lease_is_left_alone_until_it_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(1 << 20).open(&qdir).unwrap();
    let mut holder = q.producer().unwrap();
    holder.append(b"one").unwrap();
    assert!(holder.is_exclusive());
    let q2 = q.clone();
    let refused = without_membarrier(move || q2.producer().map(|_| ()).map_err(|e| e.to_string()));
    let e = refused.expect_err("the lease taken from a live holder without a barrier");
    assert!(e.contains("membarrier") && e.contains("meta"), "{e}");
    assert!(holder.is_exclusive(), "a failed revocation changed the lease word");
    holder.append(b"two").unwrap();
    drop(holder);
    let q2 = q.clone();
    let later = without_membarrier(move || {
        q2.producer().and_then(|mut p| p.append(b"three")).map_err(|e| e.to_string())
    });
    assert!(later.is_ok(), "{later:?}");
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push(rec.to_vec());
    }
    assert_eq!(got, [&b"one"[..], b"two", b"three"]);
}

/// A dead holder needs no barrier: a producer whose `membarrier` fails
/// takes the lease of a holder killed with SIGKILL, and appends after what
/// the holder appended.
#[test]
fn without_membarrier_a_dead_holders_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(1 << 20).open(&qdir).unwrap();
    let mut holder = child("lease_holder", &[("MMKQ_DIR", qdir.display().to_string())]);
    assert_eq!(line_from(&mut holder, "exclusive "), 1, "the child did not take the lease");
    kill(&mut holder);
    let q2 = q.clone();
    let taken = without_membarrier(move || {
        q2.producer().and_then(|mut p| p.append(b"three")).map_err(|e| e.to_string())
    });
    assert!(taken.is_ok(), "{taken:?}");
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push(rec.to_vec());
    }
    assert_eq!(got, [&b"one"[..], b"two", b"three"]);
}
