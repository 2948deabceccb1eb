//! The shared-memory call/reply channel carries ipc bytes between threads exactly, with
//! the badge fixed by the runtime.

use capvisor::channel::{channel, serve, Doorbell};
use ipc::{Badge, GetStats, Server, Stats, MAX_MSG_BYTES};
use std::thread;

/// Replies to GetStats with the caller's badge and a per-server call count; answers
/// anything else with the decode error, like a real server.
#[derive(Default)]
struct Counting {
    calls: u64,
}

impl Server for Counting {
    fn handle(&mut self, badge: Badge, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize {
        self.calls += 1;
        match ipc::MmuRequest::decode(request) {
            Ok(ipc::MmuRequest::GetStats(_)) => {
                let s = Stats {
                    roots_allocated: badge,
                    page_faults_fixed: self.calls,
                    ..Stats::default()
                };
                ipc::encode_reply(&s, reply).unwrap_or(0)
            }
            Ok(_) => ipc::encode_error_reply(ipc::Error::NotSupported, reply),
            Err(e) => ipc::encode_error_reply(e, reply),
        }
    }
}

#[test]
fn calls_reach_the_server_with_the_mailbox_badge() {
    let bell = Doorbell::new();
    let (mut a, a_end) = channel(&bell, 7);
    let (mut b, b_end) = channel(&bell, 9);
    let server = thread::spawn({
        let bell = bell.clone();
        move || {
            let mut s = Counting::default();
            serve(&mut s, &bell, &[a_end, b_end], |_| {});
            s.calls
        }
    });
    let ta = thread::spawn(move || {
        (0..2000)
            .map(|_| ipc::call(&mut a, &GetStats {}).unwrap().roots_allocated)
            .collect::<Vec<_>>()
    });
    let tb = thread::spawn(move || {
        let r: Vec<u64> = (0..2000)
            .map(|_| ipc::call(&mut b, &GetStats {}).unwrap().roots_allocated)
            .collect();
        // A malformed request gets the server's error reply, and the channel goes on.
        let mut reply = [0u8; MAX_MSG_BYTES];
        let n = ipc::Transport::call(&mut b, &[0xff; 3], &mut reply).unwrap();
        assert_eq!(&reply[..n], &ipc::Error::Truncated.code().to_le_bytes());
        assert_eq!(
            ipc::call(&mut b, &ipc::VcpuCreated {}).unwrap_err(),
            ipc::Error::NotSupported
        );
        r
    });
    assert!(ta.join().unwrap().iter().all(|&x| x == 7));
    assert!(tb.join().unwrap().iter().all(|&x| x == 9));
    // Both clients are dropped: the server loop ends on its own.
    assert_eq!(server.join().unwrap(), 4002);
}

#[test]
fn oversized_requests_are_refused_by_the_transport() {
    let bell = Doorbell::new();
    let (mut a, a_end) = channel(&bell, 1);
    let server = thread::spawn({
        let bell = bell.clone();
        move || serve(&mut Counting::default(), &bell, &[a_end], |_| {})
    });
    let mut reply = [0u8; MAX_MSG_BYTES];
    assert_eq!(
        ipc::Transport::call(&mut a, &[0u8; MAX_MSG_BYTES + 1], &mut reply),
        Err(ipc::Error::Transport)
    );
    drop(a);
    server.join().unwrap();
}

#[test]
fn stop_ends_the_server_loop() {
    let bell = Doorbell::new();
    let (_a, a_end) = channel(&bell, 1);
    let server = thread::spawn({
        let bell = bell.clone();
        move || serve(&mut Counting::default(), &bell, &[a_end], |_| {})
    });
    bell.stop();
    server.join().unwrap();
}

/// A server that panics on its first request.
struct Panicking;

impl Server for Panicking {
    fn handle(&mut self, _: Badge, _: &[u8], _: &mut [u8; MAX_MSG_BYTES]) -> usize {
        panic!("server bug")
    }
}

#[test]
fn a_call_to_a_dead_server_fails_instead_of_hanging() {
    let bell = Doorbell::new();
    let (mut a, a_end) = channel(&bell, 1);
    let server = thread::spawn({
        let bell = bell.clone();
        move || {
            let ends = [a_end];
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(&mut Panicking, &bell, &ends, |_| {})
            }));
            for e in &ends {
                e.server_gone();
            }
            r.is_err()
        }
    });
    assert_eq!(ipc::call(&mut a, &GetStats {}), Err(ipc::Error::Transport));
    assert!(server.join().unwrap(), "the server panicked");
    // Later calls fail at once.
    assert_eq!(ipc::call(&mut a, &GetStats {}), Err(ipc::Error::Transport));
}
