//! An upgrade in place: a gate set up by the release before GRANTS_V2, its
//! program attached and enforcing with live grants, is taken over by
//! `smtpgate run` of this tree, under a SYN flood. Probes run throughout: a stranger's SYNs
//! are never answered, the granted client's connects always are, and every
//! grant comes across with its expiry to the nanosecond.

use std::{net::IpAddr, thread, time::Duration};

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData},
    programs::{links::FdLink, Xdp, XdpMode},
    EbpfLoader,
};
use smtpgate::gate::{addr, attach, clock, maps::open_pinned, options::Hook, pins::PinDir};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP, OLDER_GRANT_MAPS, RETIRED_MAPS};
use smtpgate_tests::{probe::Around, sh, Lab, ANSWERED, CLIENT_V4, SMTP};

/// The kernel object of the release before GRANTS_V2 (see the README next to it).
const V1_OBJECT: &[u8] = include_bytes!("../fixtures/layouts/grants-v1.bpf.o");

/// That release's configuration value.
#[repr(C)]
#[derive(Clone, Copy)]
struct V1Config {
    flags: u32,
    reserved: u32,
    ports: [u64; 1024],
}

// SAFETY: repr(C) plain data without padding.
unsafe impl aya::Pod for V1Config {}

/// The id of the program in the link pinned at `pin`.
fn linked_program(pin: &std::path::Path) -> Result<u64> {
    let shown: serde_json::Value = serde_json::from_str(&sh(
        "bpftool",
        &["-j", "link", "show", "pinned", &pin.to_string_lossy()],
    )?)?;
    shown["prog_id"]
        .as_u64()
        .context("bpftool shows no prog_id")
}

/// Sets up the old release's gate on `iface`, as that release's `run`
/// would have left it: its maps pinned by name under `pins`, its XDP link
/// pinned where `run` looks for it, port 25 gated, and live grants; returns
/// the grants with their expiries. Runs in the interface's namespace.
fn set_up_v1_gate(pins: &PinDir, iface: &str) -> Result<Vec<(String, u64)>> {
    let mut old = EbpfLoader::new()
        .default_map_pin_directory(pins.path())
        .load(V1_OBJECT)
        .context("loading the v1 object")?;
    let mut config: Array<MapData, V1Config> =
        old.take_map("CONFIG").context("v1 CONFIG")?.try_into()?;
    let mut v1_config = V1Config {
        flags: 0,
        reserved: 0,
        ports: [0; 1024],
    };
    v1_config.ports[usize::from(SMTP) / 64] |= 1 << (SMTP % 64);
    config.set(0, v1_config, 0)?;
    let mut grants: HashMap<MapData, AddrKey, u64> = old
        .take_map(OLDER_GRANT_MAPS[0])
        .context("v1 GRANTS")?
        .try_into()?;
    let live = vec![
        (
            CLIENT_V4.to_string(),
            clock::expiry_after(Duration::from_secs(600)),
        ),
        (
            "203.0.113.5".to_string(),
            clock::expiry_after(Duration::from_secs(300)),
        ),
        (
            "2001:db8:77::5".to_string(),
            clock::expiry_after(Duration::from_secs(900)),
        ),
    ];
    for (ip, expiry) in &live {
        grants.insert(addr::key(ip.parse()?), expiry, 0)?;
    }
    // An expired grant, which is not to be carried.
    grants.insert(
        addr::key("203.0.113.6".parse()?),
        clock::monotonic_ns() - 1,
        0,
    )?;
    let program: &mut Xdp = old
        .program_mut("smtpgate_xdp")
        .context("v1 XDP program")?
        .try_into()?;
    attach::load_uninterrupted(|| program.load())?;
    let id = program.attach(iface, XdpMode::Driver)?;
    let link = FdLink::try_from(program.take_link(id)?)?;
    link.pin(pins.link(Hook::Xdp, iface))?;
    Ok(live)
}

#[test]
fn run_takes_over_a_gate_of_the_previous_layout_with_every_grant() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let pins = PinDir::new(lab.bpffs.pin_dir());
    pins.prepare(None)?;
    let live = lab.server.run({
        let (pins, iface) = (pins.clone(), lab.server_iface.clone());
        move || set_up_v1_gate(&pins, &iface)
    })??;
    let link_pin = pins.link(Hook::Xdp, &lab.server_iface);
    let old_program = linked_program(&link_pin)?;
    // The old gate enforces: the granted client gets in, the stranger not.
    lab.connect(smtpgate_tests::Family::V4, SMTP, ANSWERED)
        .context("the v1 gate refused its grant")?;
    lab.assert_no_answer(smtpgate_tests::Family::V6, SMTP)
        .context("the v1 gate")?;

    // Under a SYN flood from strangers, the granted client connects over
    // IPv4 and the stranger (the client's IPv6 address, never granted)
    // over IPv6, all through the upgrade.
    let around = Around::start(&lab);
    // Let the probes run against the old gate for a moment, then upgrade.
    thread::sleep(Duration::from_millis(300));
    // The probe connects hundreds of times a second, far past the SYN
    // budget carried grants get by default; this test is about the swap.
    lab.start_agent(&["--attach", "xdp", "--grant-syn-rate", "off"])?;
    ensure!(
        lab.agent_logged("took over the pinned attachment", Duration::from_secs(5)),
        "run did not take the link over"
    );
    ensure!(
        lab.agent_logged("carried 3 live grants over", Duration::from_secs(5)),
        "run did not report carrying 3 grants"
    );
    thread::sleep(Duration::from_millis(500));
    around.end()?.require_clean()?;
    ensure!(
        linked_program(&link_pin)? != old_program,
        "the pinned link still runs the old program"
    );

    // Every live grant came across with its expiry, the expired one did not.
    let carried: HashMap<MapData, AddrKey, Grant> =
        open_pinned(&pins.map(GRANTS_MAP))?.try_into()?;
    for (ip, expiry) in &live {
        // An IPv6 grant now covers the agent's default prefix, /64.
        let key = match ip.parse()? {
            IpAddr::V6(v6) => addr::key(IpAddr::V6(addr::v6_prefix_start(v6, 64))),
            v4 => addr::key(v4),
        };
        let grant = carried
            .get(&key, 0)
            .with_context(|| format!("{ip} was not carried over"))?;
        ensure!(
            grant.expiry_ns == *expiry,
            "{ip}: expiry {} became {}",
            expiry,
            grant.expiry_ns
        );
    }
    ensure!(
        carried.get(&addr::key("203.0.113.6".parse()?), 0).is_err(),
        "an expired grant was carried over"
    );
    for name in RETIRED_MAPS {
        ensure!(
            !pins.map(name).exists(),
            "{name} of the old layout is still pinned"
        );
    }
    // The commands work on the upgraded gate, and the new program enforces.
    let listed = lab.smtpgate_ok(&["list"])?;
    ensure!(
        listed.contains(CLIENT_V4) && listed.contains("2001:db8:77::/64"),
        "list after the upgrade: {listed}"
    );
    lab.connect(smtpgate_tests::Family::V4, SMTP, ANSWERED)
        .context("the grant after the upgrade")?;
    lab.assert_no_answer(smtpgate_tests::Family::V6, SMTP)
        .context("the stranger after the upgrade")?;
    Ok(())
}
