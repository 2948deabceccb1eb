//! The host runtime's call/reply channel between two protection domains running as
//! threads: one page-sized mailbox in memory both threads share, carrying exactly the
//! `ipc` bytes the seL4 runtime carries in message registers (the host analogue of an
//! endpoint plus `seL4_Call` / `seL4_ReplyRecv`).
//!
//! A mailbox is owned by one client (the vmm-server of one VM) and served by one
//! server thread (the mmu-server), which may serve many mailboxes. The badge is fixed
//! when the runtime creates the mailbox, like a badged endpoint capability minted by
//! the root task: the server learns the caller's identity from the mailbox it read,
//! never from the message.
//!
//! Protocol on `state`: the client writes the request and moves IDLE -> REQUEST; the
//! server writes the reply and moves REQUEST -> REPLY; the client copies the reply and
//! moves REPLY -> IDLE. Each side spins briefly (a call is usually answered within
//! microseconds) and then parks; the other side unparks it after every transition.
//! Release/acquire on `state` orders the buffer contents.

use ipc::{Badge, Server, Transport, MAX_MSG_BYTES};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

const IDLE: u32 = 0;
const REQUEST: u32 = 1;
const REPLY: u32 = 2;
/// The client is gone; the server stops serving this mailbox.
const CLOSED: u32 = 3;
/// The server is gone (it stopped or panicked): every call fails with `Transport`.
const SERVER_GONE: u32 = 4;

/// How long each side polls before parking. A VM exit is usually answered within
/// microseconds and the next one follows soon after, so a short busy wait avoids the
/// futex wake-up and the scheduler (tens of microseconds on a loaded machine) on the
/// hot path, while an idle server still sleeps.
const SPIN: Duration = Duration::from_micros(200);

struct Mailbox {
    state: AtomicU32,
    len: AtomicU32,
    buf: UnsafeCell<[u8; MAX_MSG_BYTES]>,
    badge: Badge,
    client: Mutex<Option<Thread>>,
    server: Arc<Doorbell>,
}

// SAFETY: `buf` is only accessed by the side that currently owns it according to
// `state` (client in IDLE, server in REQUEST, client in REPLY), with release/acquire
// transitions in between.
unsafe impl Sync for Mailbox {}

/// The server thread's wake-up: any client unparks it after posting a request.
#[derive(Default)]
pub struct Doorbell {
    thread: Mutex<Option<Thread>>,
    stop: AtomicBool,
}

impl Doorbell {
    pub fn new() -> Arc<Doorbell> {
        Arc::new(Doorbell::default())
    }

    fn ring(&self) {
        if let Some(t) = self.thread.lock().map(|g| g.clone()).unwrap_or(None) {
            t.unpark();
        }
    }

    /// Asks the server loop to return once no request is in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring();
    }
}

/// The client end (the vmm-server's `ipc::Transport`).
pub struct Client {
    mailbox: Arc<Mailbox>,
}

/// The server end, handed to the server thread.
pub struct ServerEnd {
    mailbox: Arc<Mailbox>,
}

/// Creates a mailbox served through `doorbell`, for the caller named `badge`.
pub fn channel(doorbell: &Arc<Doorbell>, badge: Badge) -> (Client, ServerEnd) {
    let mailbox = Arc::new(Mailbox {
        state: AtomicU32::new(IDLE),
        len: AtomicU32::new(0),
        buf: UnsafeCell::new([0; MAX_MSG_BYTES]),
        badge,
        client: Mutex::new(None),
        server: doorbell.clone(),
    });
    (
        Client {
            mailbox: mailbox.clone(),
        },
        ServerEnd { mailbox },
    )
}

/// Polls `cond` for up to [`SPIN`]; whether it became true.
fn spin_until(cond: &impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if cond() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return false;
        }
        // Let the other side run if it shares our core (the machine may have fewer
        // free cores than runnable threads).
        thread::yield_now();
    }
}

/// Waits until `cond` holds: a short spin, then parking (the other side unparks us
/// after every transition; the timeout only bounds a lost wake-up).
fn wait_until(cond: impl Fn() -> bool) {
    if spin_until(&cond) {
        return;
    }
    while !cond() {
        thread::park_timeout(Duration::from_millis(50));
    }
}

impl Transport for Client {
    fn call(
        &mut self,
        request: &[u8],
        reply: &mut [u8; MAX_MSG_BYTES],
    ) -> Result<usize, ipc::Error> {
        let m = &*self.mailbox;
        if request.len() > MAX_MSG_BYTES {
            return Err(ipc::Error::Transport);
        }
        {
            let mut me = m.client.lock().map_err(|_| ipc::Error::Transport)?;
            if me.is_none() {
                *me = Some(thread::current());
            }
        }
        if m.state.load(Ordering::Acquire) != IDLE {
            return Err(ipc::Error::Transport);
        }
        // A server that goes away between our check and the store below marks the
        // mailbox SERVER_GONE after it; the compare-exchange keeps that mark.
        // SAFETY: IDLE: the client owns the buffer.
        unsafe { (&mut *m.buf.get())[..request.len()].copy_from_slice(request) };
        m.len.store(request.len() as u32, Ordering::Relaxed);
        if m.state
            .compare_exchange(IDLE, REQUEST, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ipc::Error::Transport);
        }
        m.server.ring();
        wait_until(|| matches!(m.state.load(Ordering::Acquire), REPLY | SERVER_GONE));
        if m.state.load(Ordering::Acquire) == SERVER_GONE {
            return Err(ipc::Error::Transport);
        }
        let len = (m.len.load(Ordering::Relaxed) as usize).min(MAX_MSG_BYTES);
        // SAFETY: REPLY: the client owns the buffer again.
        reply[..len].copy_from_slice(unsafe { &(&*m.buf.get())[..len] });
        m.state.store(IDLE, Ordering::Release);
        Ok(len)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.mailbox.state.store(CLOSED, Ordering::Release);
        self.mailbox.server.ring();
    }
}

impl ServerEnd {
    /// Marks the mailbox as served by nobody (the server thread ended or panicked), so
    /// that a waiting or future call fails with `Transport` instead of hanging.
    pub fn server_gone(&self) {
        let m = &*self.mailbox;
        m.state.store(SERVER_GONE, Ordering::Release);
        if let Some(t) = m.client.lock().map(|g| g.clone()).unwrap_or(None) {
            t.unpark();
        }
    }
}

impl ServerEnd {
    /// Answers the pending request, if any. Returns whether one was answered.
    fn serve_one<S: Server>(&self, server: &mut S) -> bool {
        let m = &*self.mailbox;
        if m.state.load(Ordering::Acquire) != REQUEST {
            return false;
        }
        let len = (m.len.load(Ordering::Relaxed) as usize).min(MAX_MSG_BYTES);
        let mut request = [0u8; MAX_MSG_BYTES];
        // SAFETY: REQUEST: the server owns the buffer.
        request[..len].copy_from_slice(unsafe { &(&*m.buf.get())[..len] });
        let mut reply = [0u8; MAX_MSG_BYTES];
        let n = server
            .handle(m.badge, &request[..len], &mut reply)
            .min(MAX_MSG_BYTES);
        // SAFETY: still REQUEST: the server owns the buffer until it publishes REPLY.
        unsafe { (&mut *m.buf.get())[..n].copy_from_slice(&reply[..n]) };
        m.len.store(n as u32, Ordering::Relaxed);
        m.state.store(REPLY, Ordering::Release);
        if let Some(t) = m.client.lock().map(|g| g.clone()).unwrap_or(None) {
            t.unpark();
        }
        true
    }

    fn closed(&self) -> bool {
        self.mailbox.state.load(Ordering::Acquire) == CLOSED
    }
}

/// The server thread's dispatch loop (the host analogue of `seL4_ReplyRecv` in a
/// loop): answers requests on `ends` until every client is gone or the doorbell is
/// stopped. `idle` runs whenever there is nothing to answer (for periodic work such
/// as NX-huge-page recovery); it gets the server.
pub fn serve<S: Server>(
    server: &mut S,
    doorbell: &Doorbell,
    ends: &[ServerEnd],
    mut idle: impl FnMut(&mut S),
) {
    if let Ok(mut t) = doorbell.thread.lock() {
        *t = Some(thread::current());
    }
    loop {
        let mut answered = false;
        for end in ends {
            answered |= end.serve_one(server);
        }
        if answered {
            continue;
        }
        if doorbell.stop.load(Ordering::Acquire) || ends.iter().all(ServerEnd::closed) {
            return;
        }
        idle(server);
        let pending = || {
            ends.iter()
                .any(|e| e.mailbox.state.load(Ordering::Acquire) == REQUEST)
                || doorbell.stop.load(Ordering::Acquire)
                || ends.iter().all(ServerEnd::closed)
        };
        if !spin_until(&pending) {
            thread::park_timeout(Duration::from_millis(20));
        }
    }
}
