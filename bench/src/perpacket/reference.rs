//! The reference programs of bench-ebpf: the two baselines, and the harness
//! that runs any XDP program with rotating source addresses.

use anyhow::{bail, Context, Result};
use aya::{
    maps::ProgramArray,
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};

use smtpgate::gate::attach::load_uninterrupted;

use super::cases::Rotation;
use crate::{cputime::thread_cpu_ns, programs::BENCH_PROGRAMS as OBJECT};

/// The XDP_PASS-only and parse-only programs, loaded once.
pub struct Baselines {
    ebpf: Ebpf,
}

impl Baselines {
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the reference programs")?;
        for name in ["bench_pass", "bench_parse"] {
            let program: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
            load_uninterrupted(|| program.load())
                .with_context(|| format!("the kernel rejected {name}"))?;
        }
        Ok(Self { ebpf })
    }

    pub fn pass(&self) -> Result<&ProgramFd> {
        self.program("bench_pass")
    }

    pub fn parse(&self) -> Result<&ProgramFd> {
        self.program("bench_parse")
    }

    fn program(&self, name: &'static str) -> Result<&ProgramFd> {
        let program: &Xdp = self.ebpf.program(name).context(name)?.try_into()?;
        Ok(program.fd()?)
    }
}

/// One timed test run.
pub struct Timing {
    /// CPU time per run of the program, in nanoseconds.
    pub ns: f64,
    /// The program's verdict (on the last run).
    pub action: u32,
}

/// The harness, loaded for one rotation. Each test run writes the next
/// source into the frame and tail-calls the program in its slot.
pub struct Harness {
    ebpf: Ebpf,
}

impl Harness {
    pub fn load(rotation: &Rotation) -> Result<Self> {
        let stride = coprime_stride(rotation.count);
        let mut ebpf = EbpfLoader::new()
            .override_global("ADDR_OFFSET", &rotation.offset, true)
            .override_global("ADDR_BASE", &rotation.base, true)
            .override_global("ADDR_COUNT", &rotation.count, true)
            .override_global("ADDR_STRIDE", &stride, true)
            .load(OBJECT)
            .context("loading the harness")?;
        let program: &mut Xdp = ebpf
            .program_mut("bench_rotate")
            .context("bench_rotate")?
            .try_into()?;
        load_uninterrupted(|| program.load()).context("the kernel rejected the harness")?;
        Ok(Self { ebpf })
    }

    /// Runs `program` on `frame` `repeat` times in a row, in the kernel.
    ///
    /// The time is the calling thread's CPU time around the one system call,
    /// divided by `repeat`: the kernel's own figure is rounded down to whole
    /// nanoseconds, too coarse for programs that take a few, and its
    /// per-call overhead vanishes over millions of runs.
    pub fn time(&mut self, program: &ProgramFd, frame: &[u8], repeat: u32) -> Result<Timing> {
        let slot = self.ebpf.map_mut("UNDER_TEST").context("UNDER_TEST")?;
        let mut slot = ProgramArray::try_from(slot)?;
        slot.set(0, program, 0)
            .context("placing the program under test (is it an XDP program?)")?;
        let harness: &Xdp = self
            .ebpf
            .program("bench_rotate")
            .context("bench_rotate")?
            .try_into()?;
        let before = thread_cpu_ns();
        let result = harness
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        let spent = thread_cpu_ns() - before;
        if result.return_value == 0 {
            bail!("the harness aborted: the frame is too short for its rotation, or the tail call failed");
        }
        Ok(Timing {
            ns: spent as f64 / f64::from(repeat),
            action: result.return_value,
        })
    }
}

/// A step through `0..count` that visits every index once per lap and jumps
/// far each time, so that consecutive lookups never share a cache line.
fn coprime_stride(count: u32) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    // Near the golden section of the range, then the next coprime step.
    let mut stride = ((f64::from(count) * 0.618) as u32).max(1);
    while gcd(stride, count) != 1 {
        stride += 1;
    }
    stride % count.max(1)
}
