//! Access rights of a translation and the #PF error code (SDM Vol. 3A 4.6, 4.7).
//!
//! One function decides whether an access is allowed, for the page walk and for a TLB
//! hit alike: the TLB caches the *combined* rights of the walk (AND of R/W and U/S, OR
//! of XD, the protection key) and, as on hardware, CR0.WP, CR4.SMEP/SMAP/PKE, EFLAGS.AC,
//! PKRU and the CPL are applied at the time of each access (SDM 4.10.2.2).

use super::bits::*;
use super::{Access, AccessKind, PagingContext};

/// The rights a translation grants, combined over every paging-structure entry used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// U/S = 1 at every level: a user-mode address.
    pub user: bool,
    /// R/W = 1 at every level.
    pub writable: bool,
    /// XD = 1 at some level (only ever set when EFER.NXE = 1 with PAE or 4-level
    /// paging: otherwise bit 63 is reserved or does not exist).
    pub execute_disable: bool,
    /// Protection key of the leaf (4-level paging with CR4.PKE; else 0).
    pub pkey: u8,
}

impl Rights {
    /// What a walk starts from before the first entry narrows it.
    pub const ALL: Rights = Rights {
        user: true,
        writable: true,
        execute_disable: false,
        pkey: 0,
    };
}

/// Whether the access is a user-mode access: CPL 3 and not an implicit supervisor
/// access (SDM 4.6: descriptor-table and similar accesses are supervisor-mode).
#[inline]
pub fn is_user_access(ctx: &PagingContext, access: Access) -> bool {
    ctx.cpl == 3 && !access.implicit_supervisor
}

/// The error-code bits every #PF of this access carries: W/R, U/S and I/D. I/D is
/// reported only when SMEP is on, or NX exists (PAE or 4-level paging with
/// EFER.NXE = 1) (SDM 4.7).
#[inline]
pub fn access_error_bits(ctx: &PagingContext, access: Access) -> u32 {
    let mut code = 0;
    if access.kind == AccessKind::Write {
        code |= PFEC_W;
    }
    if is_user_access(ctx, access) {
        code |= PFEC_U;
    }
    if access.kind == AccessKind::Fetch
        && (ctx.cr4 & CR4_SMEP != 0 || (ctx.cr4 & CR4_PAE != 0 && ctx.efer & EFER_NXE != 0))
    {
        code |= PFEC_I;
    }
    code
}

/// Checks an access against the rights of a present translation. `None` if it is
/// allowed, else the #PF error code (P = 1, plus PK when the protection key denies it).
#[inline]
pub fn check(ctx: &PagingContext, rights: Rights, access: Access) -> Option<u32> {
    let user_access = is_user_access(ctx, access);
    let wp = ctx.cr0 & CR0_WP != 0;
    let denied = match access.kind {
        AccessKind::Fetch => {
            // SDM 4.6.1: user fetches need a user page; supervisor fetches from user
            // pages are refused under SMEP; XD refuses every fetch.
            (user_access && !rights.user)
                || (!user_access && rights.user && ctx.cr4 & CR4_SMEP != 0)
                || rights.execute_disable
        }
        AccessKind::Read | AccessKind::Write => {
            let write = access.kind == AccessKind::Write;
            // SMAP (SDM 4.6.1): supervisor data accesses to user pages are refused
            // unless explicit with EFLAGS.AC = 1.
            let smap_exempt = ctx.rflags_ac && !access.implicit_supervisor;
            let smap_denied =
                !user_access && rights.user && ctx.cr4 & CR4_SMAP != 0 && !smap_exempt;
            (user_access && !rights.user)
                || smap_denied
                || (write && !rights.writable && (user_access || wp))
        }
    };
    let pk_denied = pkey_denies(ctx, rights, access, user_access, wp);
    if denied || pk_denied {
        let mut code = PFEC_P | access_error_bits(ctx, access);
        if pk_denied {
            code |= PFEC_PK;
        }
        Some(code)
    } else {
        None
    }
}

/// Protection keys (SDM 4.6.2): only with 4-level (or 5-level) paging and CR4.PKE, only
/// for data accesses to user-mode addresses. AD denies every data access; WD denies
/// writes by user-mode accesses, and by supervisor-mode accesses when CR0.WP = 1.
#[inline]
fn pkey_denies(
    ctx: &PagingContext,
    rights: Rights,
    access: Access,
    user_access: bool,
    wp: bool,
) -> bool {
    if access.kind == AccessKind::Fetch
        || !rights.user
        || ctx.cr4 & CR4_PKE == 0
        || ctx.efer & EFER_LMA == 0
    {
        return false;
    }
    let bits = ctx.pkru >> (2 * u32::from(rights.pkey & 0xf));
    let access_disable = bits & 1 != 0;
    let write_disable = bits & 2 != 0;
    access_disable || (access.kind == AccessKind::Write && write_disable && (user_access || wp))
}
