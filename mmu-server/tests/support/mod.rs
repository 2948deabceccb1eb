//! A machine for the mmu-server's end-to-end tests: host memory for guest RAM and the
//! frame pool, a server reached through `ipc::InProcess`, guest page-table builders,
//! and walkers that read our tables as the hardware would (EPT, IA-32e, PAE root).
#![allow(dead_code)]

use core::ptr::NonNull;
use ipc::*;
use mmu_server::{MmuServer, ServerConfig};
use physmem::PhysMap;
use std::cell::RefCell;

/// Host-physical address of guest RAM (1 GiB aligned, so that any alignment the tests
/// want is available).
pub const RAM_HPA: u64 = 0x1_0000_0000;
/// Host-physical address of the frame pool: below 4 GiB, where PAE roots must be.
pub const POOL_HPA: u64 = 0x8000_0000;

pub const PG: u64 = 1 << 31;
pub const WP: u64 = 1 << 16;
pub const PE: u64 = 1;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const CR4_PKE: u64 = 1 << 22;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NX: u64 = 1 << 11;

/// Guest entry bits.
pub const P: u64 = 1;
pub const RW: u64 = 2;
pub const US: u64 = 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const XD: u64 = 1 << 63;

/// The server on the heap (it is too large for a test thread's stack to move around).
pub struct Boxed(pub Box<MmuServer>);

impl Server for Boxed {
    fn handle(&mut self, badge: Badge, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize {
        self.0.handle(badge, request, reply)
    }
}

impl std::ops::Deref for Boxed {
    type Target = MmuServer;
    fn deref(&self) -> &MmuServer {
        &self.0
    }
}

pub struct Machine {
    pub ram: Vec<u64>,
    pub pool: Vec<u64>,
    pub server: RefCell<Boxed>,
    /// The same map the server has (it only holds addresses).
    map: PhysMap,
}

impl Machine {
    /// `ram_bytes` of guest-RAM backing at [`RAM_HPA`] and a pool of `pool_frames`.
    pub fn new(ram_bytes: u64, pool_frames: usize) -> Box<Machine> {
        let mut ram = vec![0u64; (ram_bytes / 8) as usize];
        let mut pool = vec![0u64; pool_frames * 512];
        let mut phys = PhysMap::new();
        // SAFETY: both vectors live in the returned Machine, never reallocate, and are
        // only accessed through the map's atomics after this.
        unsafe {
            phys.add_region(
                RAM_HPA,
                NonNull::new(ram.as_mut_ptr().cast()).unwrap(),
                ram_bytes,
                true,
            )
            .unwrap();
            phys.add_region(
                POOL_HPA,
                NonNull::new(pool.as_mut_ptr().cast()).unwrap(),
                pool_frames as u64 * 4096,
                true,
            )
            .unwrap();
        }
        let map = phys.clone();
        let mut slot = Box::<MmuServer>::new_uninit();
        MmuServer::init_in_place(
            &mut slot,
            ServerConfig {
                phys,
                pool_base: POOL_HPA,
                pool_frames,
            },
        )
        .unwrap();
        // SAFETY: init_in_place succeeded, so the slot is initialised.
        let server = Boxed(unsafe { slot.assume_init() });
        Box::new(Machine {
            ram,
            pool,
            server: RefCell::new(server),
            map,
        })
    }

    pub fn call<R: Request>(&self, badge: Badge, req: &R) -> Result<R::Reply, Error> {
        let mut t = InProcess::new(&self.server, badge);
        call(&mut t, req)
    }

    /// Sends raw bytes, returns the raw reply.
    pub fn raw(&self, badge: Badge, bytes: &[u8]) -> Vec<u8> {
        let mut t = InProcess::new(&self.server, badge);
        let mut reply = [0u8; MAX_MSG_BYTES];
        let n = t.call(bytes, &mut reply).unwrap();
        reply[..n].to_vec()
    }

    pub fn stats(&self, badge: Badge) -> Stats {
        self.call(badge, &GetStats {}).unwrap()
    }

    pub fn phys(&self) -> &PhysMap {
        &self.map
    }

    /// Creates a VM with one RAM slot covering all guest RAM at gpa 0.
    pub fn vm(&self, badge: Badge, mode: MmuMode, root_reuse: bool) {
        self.call(
            badge,
            &CreateVm {
                mmu_mode: mode as u32,
                root_reuse: root_reuse as u32,
                flags: 0,
                reserved: 0,
            },
        )
        .unwrap();
        self.call(
            badge,
            &AddMemSlot {
                base_gfn: 0,
                npages: self.ram.len() as u64 / 512,
                host_base: RAM_HPA,
                kind: SlotKind::Ram as u32,
                reserved: 0,
            },
        )
        .unwrap();
    }

    /// Sets the system-wide NX-huge-page mode as the system controller.
    pub fn nx_mode(&self, mode: NxMode) -> Result<(), Error> {
        self.call(
            badge::SYSTEM_CONTROL,
            &SetNxHugePages {
                mode: mode as u32,
                reserved: 0,
            },
        )
        .map(|_| ())
    }

    pub fn regs(&self, badge: Badge, cr0: u64, cr3: u64, cr4: u64, efer: u64) -> RootReply {
        self.call(
            badge,
            &SetGuestRegs {
                cr0,
                cr3,
                cr4,
                efer,
            },
        )
        .unwrap()
    }

    /// The paging registers of a 64-bit guest (PE|PG|WP, PAE, LME|LMA|NX) whose
    /// 4-level tables are at `cr3`.
    pub fn long_mode(&self, badge: Badge, cr3: u64) -> RootReply {
        self.regs(
            badge,
            PE | PG | WP,
            cr3,
            CR4_PAE,
            EFER_LME | EFER_LMA | EFER_NX,
        )
    }

    pub fn cr(&self, badge: Badge, reg: CrRegister, value: u64) -> RootReply {
        self.call(
            badge,
            &CrWrite {
                value,
                reg: reg as u32,
                reserved: 0,
            },
        )
        .unwrap()
    }

    pub fn tdp_fault(&self, badge: Badge, gpa: u64, qualification: u64) -> FaultReply {
        self.call(
            badge,
            &TdpFault {
                gpa,
                gla: 0,
                qualification,
                rip: 0,
            },
        )
        .unwrap()
    }

    pub fn shadow_fault(&self, badge: Badge, gva: u64, error_code: u32, rip: u64) -> FaultReply {
        self.call(
            badge,
            &ShadowFault {
                gva,
                rip,
                error_code,
                flags: 0,
                pkru: 0,
                reserved: 0,
            },
        )
        .unwrap()
    }

    // ----- guest memory -----

    pub fn write64(&self, gpa: u64, v: u64) {
        self.phys().write_u64(RAM_HPA + gpa, v).unwrap();
    }
    pub fn read64(&self, gpa: u64) -> u64 {
        self.phys().read_u64(RAM_HPA + gpa).unwrap()
    }
    pub fn write32(&self, gpa: u64, v: u32) {
        self.phys().write_u32(RAM_HPA + gpa, v).unwrap();
    }
    pub fn read32(&self, gpa: u64) -> u32 {
        self.phys().read_u32(RAM_HPA + gpa).unwrap()
    }

    /// Maps `gva` -> `gpa` (4K) in 4-level guest tables rooted at `cr3`, taking table
    /// pages from `next_table` (a gpa bump allocator) as needed. Upper entries get
    /// `P|RW|US|A`; the leaf gets `flags`.
    pub fn map4(&self, cr3: u64, gva: u64, gpa: u64, flags: u64, next_table: &mut u64) {
        let mut table = cr3 & !0xFFF;
        for level in (2..=4).rev() {
            let e_gpa = table + 8 * ((gva >> (12 + 9 * (level - 1))) & 0x1FF);
            let e = self.read64(e_gpa);
            table = if e & P != 0 {
                e & 0xF_FFFF_FFFF_F000
            } else {
                let t = *next_table;
                *next_table += 4096;
                self.write64(e_gpa, t | P | RW | US | A);
                t
            };
        }
        self.write64(table + 8 * ((gva >> 12) & 0x1FF), gpa | flags);
    }

    // ----- our tables, read as the hardware reads them -----

    /// Reads an entry of one of our tables.
    pub fn table_entry(&self, table_hpa: u64, index: u64) -> u64 {
        self.phys().read_u64(table_hpa + 8 * index).unwrap()
    }

    /// Walks our shadow tables for `gva` (IA-32e 4-level, or a PAE root of 4 PDPTEs).
    pub fn shadow_walk(&self, root_hpa: u64, root_level: u32, gva: u64) -> Option<Leaf> {
        let phys = self.phys();
        let mut table = root_hpa;
        let (mut w, mut u, mut x) = (true, true, true);
        let mut level = root_level as u64;
        if root_level == 3 {
            let pdpte = phys.read_u64(root_hpa + 8 * ((gva >> 30) & 3)).unwrap();
            if pdpte & P == 0 {
                return None;
            }
            assert_eq!(pdpte & 0x1E6, 0, "PDPTE reserved bits");
            assert_eq!(pdpte >> 52, 0, "PDPTE reserved bits");
            table = pdpte & 0xF_FFFF_FFFF_F000;
            level = 2;
        }
        loop {
            let e = phys
                .read_u64(table + 8 * ((gva >> (12 + 9 * (level - 1))) & 0x1FF))
                .unwrap();
            if e & P == 0 {
                return None;
            }
            w &= e & RW != 0;
            u &= e & US != 0;
            x &= e & XD == 0;
            if level == 1 || e & PS != 0 {
                let size = 1u64 << (12 + 9 * (level - 1));
                return Some(Leaf {
                    hpa: (e & 0xF_FFFF_FFFF_F000 & !(size - 1)) | (gva & (size - 1) & !0xFFF),
                    level: level as u8,
                    w,
                    u,
                    x,
                    pkey: ((e >> 59) & 0xF) as u8,
                });
            }
            table = e & 0xF_FFFF_FFFF_F000;
            level -= 1;
        }
    }

    /// Walks our EPT tables for `gpa` (SDM 29.3.2).
    pub fn ept_walk(&self, root_hpa: u64, gpa: u64) -> Option<Leaf> {
        let phys = self.phys();
        let mut table = root_hpa;
        let (mut w, mut x) = (true, true);
        for level in (1..=4u64).rev() {
            let e = phys
                .read_u64(table + 8 * ((gpa >> (12 + 9 * (level - 1))) & 0x1FF))
                .unwrap();
            if e & 7 == 0 {
                return None;
            }
            assert_ne!(e & 7, 2, "write without read is a misconfiguration");
            w &= e & 2 != 0;
            x &= e & 4 != 0;
            if level == 1 || e & (1 << 7) != 0 {
                assert_eq!((e >> 3) & 7, 6, "leaves are write-back");
                let size = 1u64 << (12 + 9 * (level - 1));
                return Some(Leaf {
                    hpa: (e & 0xF_FFFF_FFFF_F000 & !(size - 1)) | (gpa & (size - 1) & !0xFFF),
                    level: level as u8,
                    w,
                    u: true,
                    x,
                    pkey: 0,
                });
            }
            table = e & 0xF_FFFF_FFFF_F000;
        }
        None
    }
}

/// What one of our tables maps an address to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub hpa: u64,
    pub level: u8,
    pub w: bool,
    pub u: bool,
    pub x: bool,
    /// Protection key (bits 62:59 of an IA-32e leaf).
    pub pkey: u8,
}

pub fn outcome(r: &FaultReply) -> FaultOutcome {
    r.outcome().unwrap()
}

/// EPT qualification bits.
pub const Q_READ: u64 = 1;
pub const Q_WRITE: u64 = 2;
pub const Q_FETCH: u64 = 4;

/// #PF error-code bits.
pub const EC_P: u32 = 1;
pub const EC_W: u32 = 2;
pub const EC_U: u32 = 4;
pub const EC_F: u32 = 16;
