//! `cargo xtask fuzz-frames`: the differential frame fuzzer, run as long as
//! asked. Every case goes to a listener with no gate and then through the
//! gate on each hook; any SYN-ACK from a gated port without a grant is a
//! failure, printed as a regression row to paste into
//! tests/tests/frame_fuzz.rs.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use clap::Parser;
use smtpgate_tests::fuzz::{
    campaign::{self, Settings},
    lab::Hook,
};

#[derive(Parser)]
#[command(
    name = "fuzz-frames",
    about = "Differential fuzzing of the gate against the kernel's own stack"
)]
struct Args {
    /// How many cases to run.
    #[arg(long, default_value_t = 20_000)]
    cases: u64,
    /// The seed (decimal or 0x-hex); a random one when not given.
    #[arg(long, value_parser = campaign::parse_seed)]
    seed: Option<u64>,
    /// The number of the first case, to replay part of an earlier run.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Only this hook (default: both).
    #[arg(long, value_parser = parse_hook)]
    hook: Option<Hook>,
}

fn parse_hook(text: &str) -> Result<Hook, String> {
    Hook::BOTH
        .into_iter()
        .find(|h| h.name() == text)
        .ok_or_else(|| format!("{text:?} is not a hook (xdp or tc)"))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Ctrl-C ends the run between phases, so every lab is torn down.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        )
    };
    let settings = Settings {
        seed: args.seed.unwrap_or_else(campaign::random_seed),
        first: args.first,
        cases: args.cases,
        hooks: args.hook.map_or(Hook::BOTH.to_vec(), |h| vec![h]),
    };
    println!(
        "fuzz-frames: seed {:#x} (replay with --seed {:#x})",
        settings.seed, settings.seed
    );
    match campaign::run(
        &settings,
        |line| println!("  {line}"),
        || INTERRUPTED.load(Ordering::SeqCst),
    ) {
        Ok(outcome) => {
            print!("{outcome}");
            if outcome.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fuzz-frames: {e:#}");
            ExitCode::from(2)
        }
    }
}
