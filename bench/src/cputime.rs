//! The calling thread's CPU time, which both the per-packet runs and the
//! flood's sender are timed by: exact, and blind to whatever else the
//! machine is doing.

pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU time process `pid` has used so far, all its threads, in
/// nanoseconds: exact, unlike the clock ticks of `/proc/PID/stat`.
pub fn process_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: valid out-pointer.
    let err = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    anyhow::ensure!(err == 0, "no CPU clock for process {pid}: error {err}");
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer, a clock just handed out.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    anyhow::ensure!(
        rc == 0,
        "reading the CPU clock of process {pid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
