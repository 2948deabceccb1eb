//! Round-trip time of the host channel: a trivial server answering GetStats.
use capvisor::channel::{channel, serve, Doorbell};
use ipc::{Badge, GetStats, Server, Stats, MAX_MSG_BYTES};
use std::time::Instant;

struct Echo;
impl Server for Echo {
    fn handle(&mut self, badge: Badge, _: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize {
        ipc::encode_reply(
            &Stats {
                roots_allocated: badge,
                ..Stats::default()
            },
            reply,
        )
        .unwrap_or(0)
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let bell = Doorbell::new();
    let (mut c, end) = channel(&bell, 1);
    let t = std::thread::spawn({
        let bell = bell.clone();
        move || serve(&mut Echo, &bell, &[end], |_| {})
    });
    let start = Instant::now();
    for _ in 0..n {
        ipc::call(&mut c, &GetStats {}).unwrap();
    }
    let el = start.elapsed();
    println!(
        "{n} calls: {:.2} us per round trip",
        el.as_secs_f64() * 1e6 / n as f64
    );
    drop(c);
    t.join().unwrap();
}
