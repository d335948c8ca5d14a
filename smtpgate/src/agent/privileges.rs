//! What the agent may still do once the gate is up. Loading and attaching
//! the program, opening the kernel log and binding the sockets need root's
//! power; running the gate afterwards needs two capabilities:
//!
//! * `CAP_BPF`: every `bpf()` call, map reads and writes through the fds
//!   the agent holds included, since Debian forbids unprivileged BPF
//!   (`kernel.unprivileged_bpf_disabled`);
//! * `CAP_NET_ADMIN`: attaching the loaded program again, to an interface
//!   that comes back.
//!
//! What needs more only when it is opened, such as the raw sockets that
//! replay refused SYNs on kernels without live frames (`CAP_NET_RAW`), is
//! opened before the drop.
//!
//! Everything else is dropped from every set, the bounding set included,
//! so that nothing the agent runs later (`journalctl`) regains it. Linux
//! keeps capabilities per thread: this runs on the runtime's thread before
//! any other thread exists, and the threads started later inherit the
//! reduced sets. Kernels older than 5.8 know no `CAP_BPF`; there
//! `CAP_SYS_ADMIN` stands in for it.
//!
//! A dedicated user (not root) gets the same from its starter instead, as
//! ambient capabilities: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON (the verifier
//! accepts the program's pointer arithmetic only with it) and CAP_CHOWN
//! (for a login socket's group); the drop then works the same. This module
//! also tells whether a command may use bpf() at all (`bpf_capable`), and
//! looks up the groups the pin directory and the login socket are given
//! (`group_id`).

use std::io;

use anyhow::{Context, Result};

const CAP_SETPCAP: u32 = 8;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The capabilities the running service keeps, on this kernel.
fn kept() -> Result<Vec<u32>> {
    let last = last_capability()?;
    let bpf = if CAP_BPF <= last {
        CAP_BPF
    } else {
        CAP_SYS_ADMIN
    };
    Ok(vec![bpf, CAP_NET_ADMIN])
}

/// The highest capability this kernel knows.
fn last_capability() -> Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .context("reading /proc/sys/kernel/cap_last_cap")?;
    text.trim()
        .parse()
        .context("/proc/sys/kernel/cap_last_cap holds no number")
}

/// Drops every capability but those the service needs, from the bounding,
/// ambient, inheritable, permitted and effective sets of this thread; says
/// which it kept. Started with fewer (a unit's `CapabilityBoundingSet`),
/// it keeps what it has of those two; without CAP_SETPCAP it leaves the
/// bounding set as the starter narrowed it.
pub fn drop_to_service() -> Result<()> {
    let permitted = current()?;
    let kept: Vec<u32> = kept()?
        .into_iter()
        .filter(|&cap| has(&permitted, cap))
        .collect();
    // Removing from the bounding set needs CAP_SETPCAP, so it goes first.
    let may_narrow_bounding = has(&permitted, CAP_SETPCAP);
    for cap in 0..=last_capability()? {
        if may_narrow_bounding && !kept.contains(&cap) {
            // SAFETY: a plain prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("dropping capability {cap} from the bounding set"));
            }
        }
    }
    // SAFETY: a plain prctl with integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error()).context("clearing the ambient capabilities");
    }
    let mut data = [Data::default(); 2];
    for &cap in &kept {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective |= bit;
        data[word].permitted |= bit;
    }
    let header = Header {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a header and two data words, both valid.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("dropping capabilities");
    }
    tracing::info!(
        kept = ?kept.iter().map(|&cap| name(cap)).collect::<Vec<_>>(),
        "dropped every other capability"
    );
    Ok(())
}

/// Whether this thread may use bpf(): root, or a user given CAP_BPF
/// (CAP_SYS_ADMIN before 5.8), as a dedicated user's ambient capability.
pub fn bpf_capable() -> Result<bool> {
    let effective =
        |data: &[Data; 2], cap: u32| data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0;
    let sets = current()?;
    Ok(effective(&sets, CAP_BPF) || effective(&sets, CAP_SYS_ADMIN))
}

/// The id of the group `name`.
pub fn group_id(name: &str) -> Result<u32> {
    let c_name = std::ffi::CString::new(name.as_bytes())?;
    // SAFETY: valid C string; the result is read before any other call.
    let entry = unsafe { libc::getgrnam(c_name.as_ptr()) };
    if entry.is_null() {
        anyhow::bail!("no group named '{name}'");
    }
    // SAFETY: a non-null entry getgrnam returned.
    Ok(unsafe { (*entry).gr_gid })
}

/// This thread's capability sets.
fn current() -> Result<[Data; 2]> {
    let header = Header {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two data words into valid memory.
    if unsafe { libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("reading the capabilities");
    }
    Ok(data)
}

/// Whether `cap` is in the permitted set of `data`.
fn has(data: &[Data; 2], cap: u32) -> bool {
    data[(cap / 32) as usize].permitted & (1 << (cap % 32)) != 0
}

fn name(cap: u32) -> &'static str {
    match cap {
        CAP_BPF => "CAP_BPF",
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        _ => "?",
    }
}
