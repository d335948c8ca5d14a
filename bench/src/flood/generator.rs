//! The SYN flood: TCP SYNs to port 25 from random sources, made in the
//! kernel by bench-ebpf's `bench_flood` and sent as XDP frames.
//!
//! A packet socket (or trafgen) would hand the veth finished socket
//! buffers, and the receiving veth would then have to copy each into a
//! fresh page before native XDP could see it: XDP would pay for an
//! allocation that a NIC's receive ring never makes. Frames redirected by
//! XDP instead arrive as XDP frames, exactly like DMA'd frames on a NIC:
//! XDP contenders judge them before any socket buffer exists, and
//! everything behind XDP pays for building one, as it would on real
//! hardware.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    EbpfLoader,
};
use smtpgate::gate::attach::load_uninterrupted;
use smtpgate_tests::{
    frames::{fill_checksums, Packet},
    SERVER_V4, SMTP,
};

use crate::{cputime::thread_cpu_ns, programs::BENCH_PROGRAMS};

/// Frames made per test run. Each run sets up and tears down a page pool,
/// which costs tens of milliseconds of waiting here: a run of a million
/// frames (a few hundred milliseconds) keeps the sender busy nine tenths of
/// the time.
const FRAMES_PER_RUN: u32 = 1 << 20;
/// Frames the kernel makes and sends in one go.
const BATCH: u32 = 64;

/// Where a running flood stands; shared with the thread that sends it.
#[derive(Default)]
pub struct Progress {
    pub stop: AtomicBool,
    /// Frames the generator made. Those the receiving veth had no room for
    /// are lost on the way, as on a wire.
    pub sent: AtomicU64,
    /// The sending thread's CPU time, in nanoseconds, updated per run.
    pub cpu_ns: AtomicU64,
}

/// The frame every flood frame starts from: a SYN from 198.18.0.0, with the
/// checksums the generator patches for each new source.
pub fn template() -> Vec<u8> {
    let mut frame = Packet::syn("198.18.0.0", SERVER_V4, SMTP).build();
    fill_checksums(&mut frame);
    frame
}

/// Floods out of `iface` (in the calling thread's namespace) until
/// `progress.stop` is set.
pub fn send(iface: &str, progress: &Progress) -> Result<()> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface {iface}");
    let mut ebpf = EbpfLoader::new()
        .override_global("FLOOD_IFINDEX", &ifindex, true)
        .load(BENCH_PROGRAMS)
        .context("loading the flood generator")?;
    let generator: &mut Xdp = ebpf
        .program_mut("bench_flood")
        .context("bench_flood")?
        .try_into()?;
    load_uninterrupted(|| generator.load()).context("the kernel rejected the flood generator")?;
    let frame = template();
    while !progress.stop.load(Ordering::Relaxed) {
        generator
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: FRAMES_PER_RUN,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .context("running the flood generator (live frames need Linux 5.18)")?;
        progress
            .sent
            .fetch_add(u64::from(FRAMES_PER_RUN), Ordering::Relaxed);
        progress.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use aya::Ebpf;

    use super::*;

    /// Runs the generator on the template (an ordinary test run, which
    /// returns the frame instead of sending it) and checks what it made: the
    /// kernel's TCP stack, in the runs without a filter, verifies both
    /// checksums.
    #[test]
    fn generated_frames_carry_valid_checksums_and_distinct_sources() -> Result<()> {
        let mut ebpf = Ebpf::load(BENCH_PROGRAMS)?;
        let generator: &mut Xdp = ebpf
            .program_mut("bench_flood")
            .context("bench_flood")?
            .try_into()?;
        load_uninterrupted(|| generator.load())?;
        let template = template();
        assert!(smtpgate_tests::frames::checksums_valid(&template));
        let mut sources = HashSet::new();
        for _ in 0..200 {
            let mut out = vec![0; template.len()];
            generator.test_run(TestRunOptions {
                data_in: Some(&template),
                data_out: Some(&mut out),
                ..Default::default()
            })?;
            assert!(
                smtpgate_tests::frames::checksums_valid(&out),
                "bad checksums in {out:02x?}"
            );
            assert!(
                out[26] == 198 && out[27] & 0xfe == 18,
                "source outside 198.18.0.0/15"
            );
            // Only the IP checksum (24..26), the source (26..30) and the TCP
            // checksum (50..52) may change.
            for range in [0..24, 30..50, 52..template.len()] {
                assert_eq!(
                    out[range.clone()],
                    template[range],
                    "more than the source and checksums changed"
                );
            }
            sources.insert(out[26..30].to_vec());
        }
        assert!(
            sources.len() > 190,
            "only {} distinct sources in 200 frames",
            sources.len()
        );
        Ok(())
    }
}
