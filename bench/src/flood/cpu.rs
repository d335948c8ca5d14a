//! CPU time of single threads, in nanoseconds, from the scheduler's own
//! accounting: exact, and blind to whatever else the machine is doing.

use std::{fs, thread, time::Duration};

use anyhow::{bail, Context, Result};

/// CPU time of thread `tid` (its first schedstat field).
pub fn task_cpu_ns(tid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .with_context(|| format!("reading thread {tid}'s schedstat"))?;
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("malformed schedstat")
}

/// The kernel thread that polls `iface`'s receive queue (threaded NAPI),
/// named `napi/IFACE-ID`, cut to the 15 characters a thread name keeps. It
/// may take a moment to appear after NAPI is switched on.
pub fn napi_thread(iface: &str) -> Result<u32> {
    let mut wanted = format!("napi/{iface}-");
    wanted.truncate(15);
    for _ in 0..50 {
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc")? {
            let path = entry?.path();
            let Ok(comm) = fs::read_to_string(path.join("comm")) else {
                continue;
            };
            if comm.starts_with(&wanted) {
                found.extend(
                    path.file_name()
                        .and_then(|n| n.to_str()?.parse::<u32>().ok()),
                );
            }
        }
        match found[..] {
            [tid] => return Ok(tid),
            [] => thread::sleep(Duration::from_millis(20)),
            _ => bail!("several threads are named {wanted}…; cannot tell which polls {iface}"),
        }
    }
    bail!("no NAPI thread for {iface}")
}

/// Pins thread `tid` (0: the calling thread) to `cpu`. Threads and
/// processes started by a pinned thread inherit its pinning.
pub fn pin(tid: u32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(tid, &set)
}

/// Lets thread `tid` (0: the calling thread) run on every CPU again.
pub fn unpin(tid: u32) -> Result<()> {
    // SAFETY: as in `pin`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..libc::CPU_SETSIZE as usize {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set_affinity(tid, &set)
}

fn set_affinity(tid: u32, set: &libc::cpu_set_t) -> Result<()> {
    // SAFETY: valid set of the size given.
    if unsafe { libc::sched_setaffinity(tid as i32, size_of_val(set), set) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid}"));
    }
    Ok(())
}
