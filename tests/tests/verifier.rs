//! The verifier's work on the kernel program, which grows with every path
//! the header walk can take: each program must stay well inside the
//! instruction budget the verifier allows (one million since Linux 5.2),
//! so that the walk can grow and an older kernel's verifier, which prunes
//! less well, still accepts it. And a check a signal interrupts is made
//! again.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use smtpgate::gate::attach::{self, Variant};
use smtpgate_tests::testrun::LoadedGate;

/// A quarter of the verifier's limit.
const BUDGET: u32 = 250_000;

#[test]
fn each_program_stays_within_a_quarter_of_the_verifier_budget() -> Result<()> {
    for variant in Variant::ALL {
        let gate = LoadedGate::variant(0, &[25], variant)?;
        for (name, count) in gate.verified_instruction_counts()? {
            eprintln!("{variant:?} {name}: the verifier processed {count} instructions");
            ensure!(
                count < BUDGET,
                "{variant:?} {name}: {count} instructions verified, over the budget of {BUDGET}"
            );
        }
    }
    Ok(())
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// The verifier gives up with EAGAIN when a signal reaches the loading
/// thread, as a SIGCHLD to the agent's tokio or a SIGHUP may: the real
/// program, loaded while signals rain on that thread through its first two
/// attempts, loads at the third.
#[test]
fn a_load_interrupted_by_signals_is_attempted_again() -> Result<()> {
    // SAFETY: a handler that does nothing; without SA_RESTART, as an
    // unprepared caller's would be.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        ensure!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) == 0,
            "sigaction: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut gate = LoadedGate::new(0, &[25])?;
    let xdp = gate.xdp_mut()?;
    xdp.unload()?;
    // SAFETY: plain syscalls without arguments.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    let (storm, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut attempts = 0;
    let loaded = thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if storm.load(Ordering::SeqCst) {
                    // SAFETY: a signal with a handler, to a thread of this process.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        let loaded = attach::load_uninterrupted(|| {
            attempts += 1;
            storm.store(attempts <= 2, Ordering::SeqCst);
            xdp.load()
        });
        done.store(true, Ordering::SeqCst);
        loaded
    });
    loaded.context("the load after two interrupted attempts")?;
    ensure!(
        attempts == 3,
        "{attempts} attempts: the interrupted ones were not made again"
    );
    Ok(())
}
