//! Loading the kernel program and attaching it to interfaces.
//!
//! Every attachment is a bpf_link pinned in the pin directory (or, for TC on
//! kernels before 6.6, a netlink filter recorded there). A second `run`
//! finds the pin and swaps its freshly loaded program into the existing link
//! with BPF_LINK_UPDATE: the gate never opens while the agent restarts or is
//! upgraded.

use std::{
    fs, io,
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType, TcHandle},
        ProgramError, SchedClassifier, Xdp,
    },
    util::KernelVersion,
    Ebpf, EbpfLoader,
};
use smtpgate_common::grant_filter;

use crate::gate::{
    errno::errno,
    options::{Hook, XdpMode},
    pins::PinDir,
};

/// The kernel program, compiled by build.rs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smtpgate"));

/// Log level of the kernel program's messages, fixed when it is loaded.
pub use aya_log::Level as KernelLogLevel;

const XDP_PROGRAM: &str = "smtpgate_xdp";
/// The program's switch between the two clocks (see [`GateClock`]).
const COARSE_CLOCK: &str = "SMTPGATE_COARSE_CLOCK";
/// The program's switch for copying refused SYNs with `bpf_xdp_load_bytes`.
const XDP_LOAD_BYTES: &str = "SMTPGATE_XDP_LOAD_BYTES";
/// The program's switch for logging each refusal (debug level).
const LOG_REFUSALS: &str = "SMTPGATE_LOG_REFUSALS";
const TC_PROGRAM: &str = "smtpgate_tc";

/// The clock the program compares grant expiries with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateClock {
    /// `bpf_ktime_get_coarse_ns` (Linux 5.11 and later): the last tick.
    Coarse,
    /// `bpf_ktime_get_ns`: a clocksource read, on every kernel.
    Precise,
}

/// What the program uses of kernels newer than 5.10, chosen before load:
/// the verifier removes the branches of what is not chosen, and a kernel
/// that lacks a helper chosen rejects the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub clock: GateClock,
    /// `bpf_xdp_load_bytes` (Linux 5.18) copies a refused SYN for replay
    /// in one call; without it, byte by byte.
    pub xdp_load_bytes: bool,
}

impl Variant {
    /// For Linux 5.18, 5.11 and 5.10 on: the order `load` tries them in.
    pub const ALL: [Variant; 3] = [
        Variant {
            clock: GateClock::Coarse,
            xdp_load_bytes: true,
        },
        Variant {
            clock: GateClock::Coarse,
            xdp_load_bytes: false,
        },
        Variant {
            clock: GateClock::Precise,
            xdp_load_bytes: false,
        },
    ];
}

/// Loads the object, creating the pinned maps or reusing those already there,
/// and has the verifier check both programs. Programs refer to maps by fd at
/// load time, so this happens before any map is taken out of the object.
///
/// The newest [`Variant`] is tried first; a kernel without what it uses
/// rejects that load, and the next one is loaded.
pub fn load(pins: &PinDir, max_grants: u32, kernel_log_level: aya_log::Level) -> Result<Ebpf> {
    let mut refused = None;
    for variant in Variant::ALL {
        match load_variant(pins, max_grants, kernel_log_level, variant) {
            Ok(ebpf) => {
                tracing::debug!(?variant, "program loaded");
                return Ok(ebpf);
            }
            Err(err) => {
                tracing::debug!("{variant:?} was refused ({err:#}); loading the next variant");
                refused = Some(err);
            }
        }
    }
    Err(refused.expect("there are variants to try"))
}

/// [`load`] of the variant the caller chose.
pub fn load_variant(
    pins: &PinDir,
    max_grants: u32,
    kernel_log_level: aya_log::Level,
    variant: Variant,
) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.path())
        .map_max_entries(smtpgate_common::GRANTS_MAP, max_grants)
        .map_max_entries(
            smtpgate_common::GRANT_FILTER_MAP,
            grant_filter::map_words(max_grants),
        )
        .override_global(aya_log::LEVEL, &(kernel_log_level as u8), false)
        .override_global(
            COARSE_CLOCK,
            &u8::from(variant.clock == GateClock::Coarse),
            true,
        )
        .override_global(XDP_LOAD_BYTES, &u8::from(variant.xdp_load_bytes), true)
        .override_global(
            LOG_REFUSALS,
            &u8::from(kernel_log_level as u8 >= aya_log::Level::Debug as u8),
            true,
        )
        .load(PROGRAM)
        .context("loading the smtpgate BPF object")?;
    let xdp: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?.try_into()?;
    load_uninterrupted(|| xdp.load()).context("the kernel rejected the XDP program")?;
    let tc: &mut SchedClassifier = program(&mut ebpf, TC_PROGRAM)?.try_into()?;
    load_uninterrupted(|| tc.load()).context("the kernel rejected the TC program")?;
    Ok(ebpf)
}

/// How often a program is loaded before a run of interruptions counts as
/// a failure (libbpf's number).
const LOAD_ATTEMPTS: usize = 5;

/// Runs `load` again while the verifier gives up with EAGAIN: it does so
/// when a signal reaches the loading thread mid-check (a SIGCHLD to tokio's
/// handler, a SIGHUP), which says nothing about the program.
pub fn load_uninterrupted(
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                tracing::debug!(
                    "a signal interrupted the verifier (attempt {attempt}); loading again"
                );
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Pins the loaded XDP program where [`PinDir::program`] says, in place of
/// an earlier run's.
pub fn pin_program(ebpf: &mut Ebpf, pins: &PinDir) -> Result<()> {
    let pin = pins.program();
    remove_if_present(&pin)?;
    let xdp: &mut Xdp = program(ebpf, XDP_PROGRAM)?.try_into()?;
    xdp.pin(&pin)
        .with_context(|| format!("pinning {}", pin.display()))
}

/// Fails unless `iface` exists in this network namespace and carries
/// Ethernet frames, the only framing the gate parses. A tunnel without a
/// link-layer header (GRE, IPIP, WireGuard) must be refused: the gate would
/// read its IP header as Ethernet.
pub fn require_interface(iface: &str) -> Result<()> {
    let name =
        std::ffi::CString::new(iface).map_err(|_| anyhow!("bad interface name '{iface}'"))?;
    // SAFETY: valid C string.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        bail!("no network interface named '{iface}'");
    }
    let link_type =
        link_type(&name).with_context(|| format!("reading the link type of {iface}"))?;
    if link_type != libc::ARPHRD_ETHER {
        bail!(
            "{iface} does not carry Ethernet frames (link type {link_type}); the gate parses Ethernet only: \
             gate the Ethernet interface the traffic arrives on, or filter port 25 on {iface} another way"
        );
    }
    Ok(())
}

/// The `ARPHRD_*` link type of an interface, asked of a socket in this
/// thread's network namespace (sysfs shows the namespace it was mounted in).
fn link_type(name: &std::ffi::CStr) -> io::Result<u16> {
    // SAFETY: plain libc calls on a socket owned here; `ifreq` is zeroed
    // and holds a NUL-terminated name shorter than IFNAMSIZ.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = std::os::fd::OwnedFd::from_raw_fd(socket);
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, &byte) in request
            .ifr_name
            .iter_mut()
            .zip(name.to_bytes().iter().take(libc::IFNAMSIZ - 1))
        {
            *slot = byte as libc::c_char;
        }
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(request.ifr_ifru.ifru_hwaddr.sa_family)
    }
}

/// Whether `run` created a new attachment or took over an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    New,
    Replaced,
}

/// Attaches (or re-attaches) the gate to `iface` through `hook`, then removes
/// an attachment of the other hook on the same interface, if any.
pub fn attach(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    iface: &str,
    hook: Hook,
    mode: XdpMode,
) -> Result<Attached> {
    let attached = match hook {
        Hook::Xdp => attach_xdp(ebpf, pins, iface, mode),
        Hook::Tc if tcx_supported() => attach_tcx(ebpf, pins, iface),
        Hook::Tc => attach_tc_netlink(ebpf, pins, iface),
    }
    .with_context(|| format!("attaching to {iface} ({})", hook.name()))?;
    detach_one(pins, hook.other(), iface)?;
    Ok(attached)
}

fn attach_xdp(ebpf: &mut Ebpf, pins: &PinDir, iface: &str, mode: XdpMode) -> Result<Attached> {
    let program: &mut Xdp = program(ebpf, XDP_PROGRAM)?.try_into()?;
    attach_linked(program, &pins.link(Hook::Xdp, iface), |program| {
        let id = program
            .attach(iface, mode.into())
            .map_err(|e| explain_attach_error(iface, e.into()))?;
        FdLink::try_from(program.take_link(id)?).map_err(|_| {
            anyhow!(
                "this kernel attached XDP without a bpf_link; smtpgate needs Linux 5.9 or later"
            )
        })
    })
}

fn attach_tcx(ebpf: &mut Ebpf, pins: &PinDir, iface: &str) -> Result<Attached> {
    let program: &mut SchedClassifier = program(ebpf, TC_PROGRAM)?.try_into()?;
    attach_linked(program, &pins.link(Hook::Tc, iface), |program| {
        let id = program.attach(iface, TcAttachType::Ingress)?;
        FdLink::try_from(program.take_link(id)?)
            .map_err(|_| anyhow!("expected a TCX link on a kernel of 6.6 or later"))
    })
}

/// A program attached through a bpf_link (XDP; TC on Linux 6.6 and later).
trait LinkedProgram {
    /// Swaps this program into `link`, the link an earlier run pinned.
    fn swap_into(&mut self, link: FdLink) -> Result<()>;
}

/// aya gives `Xdp` and `SchedClassifier` the same link methods but no trait
/// that has them.
macro_rules! linked_program {
    ($($program:ty),*) => {$(
        impl LinkedProgram for $program {
            fn swap_into(&mut self, link: FdLink) -> Result<()> {
                let id = self.attach_to_link(link.try_into()?)?;
                drop(self.take_link(id)?);
                Ok(())
            }
        }
    )*};
}

linked_program!(Xdp, SchedClassifier);

/// Attaches `program` through the bpf_link pinned at `pin`: takes over the
/// link an earlier run pinned there, or else attaches afresh with `attach`
/// and pins the new link.
fn attach_linked<P: LinkedProgram>(
    program: &mut P,
    pin: &Path,
    attach: impl FnOnce(&mut P) -> Result<FdLink>,
) -> Result<Attached> {
    if take_over(pin, |link| program.swap_into(link))? {
        return Ok(Attached::Replaced);
    }
    attach(program)?
        .pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(Attached::New)
}

/// Swaps the loaded program into the link pinned at `pin` with `swap`.
/// False if there is no pin, or its interface vanished (the pin is then
/// removed so a fresh attachment can take its place).
fn take_over(pin: &Path, swap: impl FnOnce(FdLink) -> Result<()>) -> Result<bool> {
    let link = match PinnedLink::from_pin(pin) {
        Ok(link) => FdLink::from(link),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
            return Ok(false)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", pin.display())),
    };
    let Err(err) = swap(link) else {
        return Ok(true);
    };
    if errno(&err) != Some(libc::ENOLINK) {
        return Err(err.context(format!("replacing the program in {}", pin.display())));
    }
    tracing::info!(
        "{} belonged to a vanished interface; attaching afresh",
        pin.display()
    );
    remove_if_present(pin)?;
    Ok(false)
}

/// TC before Linux 6.6: a filter under the clsact qdisc, added through
/// netlink. It stays in place when the agent exits because its link is never
/// dropped; its priority and handle are recorded so the next run can replace
/// it and `detach` can remove it.
fn attach_tc_netlink(ebpf: &mut Ebpf, pins: &PinDir, iface: &str) -> Result<Attached> {
    let program: &mut SchedClassifier = program(ebpf, TC_PROGRAM)?.try_into()?;
    let record = pins.tc_netlink_record(iface);
    let (id, attached) = match read_netlink_record(&record)? {
        Some((priority, handle)) => {
            let link = SchedClassifierLink::attached(
                iface,
                TcAttachType::Ingress,
                priority,
                handle,
                None,
            )?;
            (program.attach_to_link(link)?, Attached::Replaced)
        }
        None => {
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                let e = anyhow::Error::from(e);
                if errno(&e) != Some(libc::EEXIST) {
                    return Err(e.context("adding the clsact qdisc"));
                }
            }
            let netlink = TcAttachOptions::Netlink(NlOptions::default());
            (
                program.attach_with_options(iface, TcAttachType::Ingress, netlink)?,
                Attached::New,
            )
        }
    };
    let link = program.take_link(id)?;
    let (priority, handle) = (link.priority()?, u32::from(link.handle()?));
    // bpffs holds no regular files, but it does hold symlinks: the record is
    // the link's target text, "PRIORITY HANDLE".
    remove_if_present(&record)?;
    std::os::unix::fs::symlink(format!("{priority} {handle}"), &record)
        .with_context(|| format!("recording {}", record.display()))?;
    // Dropping the link would remove the filter; it must outlive the agent.
    std::mem::forget(link);
    Ok(attached)
}

fn read_netlink_record(record: &Path) -> Result<Option<(u16, TcHandle)>> {
    let text = match fs::read_link(record) {
        Ok(target) => target.to_string_lossy().into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", record.display())),
    };
    let mut fields = text.split_whitespace().map(str::parse::<u32>);
    match (fields.next(), fields.next()) {
        (Some(Ok(priority)), Some(Ok(handle))) if priority <= u16::MAX as u32 => {
            Ok(Some((priority as u16, TcHandle::from(handle))))
        }
        _ => bail!("{} is corrupt; remove it and run again", record.display()),
    }
}

/// Removes the attachment of `iface` through `hook`; false if there was none.
pub fn detach_one(pins: &PinDir, hook: Hook, iface: &str) -> Result<bool> {
    let pin = pins.link(hook, iface);
    // Removing the pin drops the last reference to the link (the agent holds
    // none), and the kernel detaches the program.
    let unpinned = remove_if_present(&pin)?;
    let record = pins.tc_netlink_record(iface);
    let mut removed_filter = false;
    if hook == Hook::Tc {
        if let Some((priority, handle)) = read_netlink_record(&record)? {
            // A vanished interface took its filter with it.
            if let Ok(link) =
                SchedClassifierLink::attached(iface, TcAttachType::Ingress, priority, handle, None)
            {
                drop(link);
            }
            removed_filter = remove_if_present(&record)?;
        }
    }
    Ok(unpinned || removed_filter)
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the BPF object"))
}

fn explain_attach_error(iface: &str, err: anyhow::Error) -> anyhow::Error {
    match errno(&err) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => anyhow!(
            "{iface} already has an XDP program that smtpgate does not own; remove it \
             (ip link set dev {iface} xdp off) or use --attach tc"
        ),
        Some(libc::EOPNOTSUPP) => anyhow!(
            "{iface}'s driver does not support native XDP; use --xdp-mode skb or --attach tc"
        ),
        _ => err,
    }
}

/// TCX (bpf_link-based TC) arrived in Linux 6.6, as aya's own choice assumes.
/// `SMTPGATE_TC_NETLINK=1` forces the pre-6.6 netlink path, so that path can
/// be exercised on a new kernel too.
fn tcx_supported() -> bool {
    if std::env::var_os("SMTPGATE_TC_NETLINK").is_some_and(|v| v == "1") {
        return false;
    }
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}
