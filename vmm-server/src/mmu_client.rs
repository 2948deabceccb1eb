//! The vmm-server's side of the mmu-server protocol: typed calls over any
//! [`ipc::Transport`], counted (the `ipc_calls` statistic).

use ipc::{Request, Transport};

/// A counted connection to the mmu-server.
pub struct MmuClient<T: Transport> {
    transport: T,
    calls: u64,
}

/// A failed call: which request, and the protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuCallError {
    pub request: ipc::Label,
    pub error: ipc::Error,
}

impl core::fmt::Display for MmuCallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mmu-server refused {:?}: {}", self.request, self.error)
    }
}

impl<T: Transport> MmuClient<T> {
    pub fn new(transport: T) -> Self {
        MmuClient {
            transport,
            calls: 0,
        }
    }

    /// Sends `req` and waits for its reply.
    pub fn call<R: Request>(&mut self, req: &R) -> Result<R::Reply, MmuCallError> {
        self.calls += 1;
        ipc::call(&mut self.transport, req).map_err(|error| MmuCallError {
            request: R::LABEL,
            error,
        })
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Counts calls made over another channel of the same VM (a capability's).
    pub fn add_calls(&mut self, n: u64) {
        self.calls += n;
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
}
