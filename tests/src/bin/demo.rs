//! `cargo xtask demo`: smtpgate at work in a throw-away lab.
//!
//! A server host runs Dovecot (POP3/IMAP) and Postfix (SMTP) with the gate in
//! front; a customer and a stranger try to send mail. Everything lives in
//! network namespaces and temporary directories that are removed on exit,
//! Ctrl-C included.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use smtpgate_tests::{
    mail::{LabExt, Login, MailLab},
    Family, SMTP,
};

const TTL_SECS: u64 = 20;
const CUSTOMER: &str = "192.0.2.2";
const STRANGER: &str = "192.0.2.3";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() {
    // Ctrl-C ends the demo between steps, so that every Drop cleans up.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        )
    };
    match demo() {
        Ok(()) => println!("\nThe lab is gone: namespaces, servers, pins and files removed."),
        Err(e) => {
            eprintln!("\ndemo stopped: {e:#}");
            std::process::exit(1);
        }
    }
}

fn step(text: &str) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    println!("\n== {text}");
    Ok(())
}

fn pause(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted; cleaning up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Tries port 25 from `source` and says what happened.
fn try_smtp(lab: &MailLab, who: &str, source: &str) -> Result<bool> {
    let source: IpAddr = source.parse()?;
    let started = Instant::now();
    match lab
        .lab
        .connect_from(source, SMTP, Duration::from_millis(2500))
    {
        Ok(_) => {
            println!(
                "   {who} ({source}): connected to port 25 after {:?}",
                started.elapsed()
            );
            Ok(true)
        }
        Err(e) => {
            println!("   {who} ({source}): no answer from port 25 ({e}); the SYNs were dropped by the gate");
            Ok(false)
        }
    }
}

fn counters(lab: &MailLab) -> Result<()> {
    let c = lab.lab.counters()?;
    println!(
        "   gate counters: gated SYNs {}, allowed by grant {}, dropped without grant {}, dropped after expiry {}",
        c["gated_syns"], c["allowed_grant"], c["dropped_no_grant"], c["dropped_expired"]
    );
    Ok(())
}

fn demo() -> Result<()> {
    println!("smtpgate demo: POP-before-SMTP enforced in the kernel");
    step("Building the lab: server 192.0.2.1 (Dovecot + Postfix + smtpgate), customer 192.0.2.2, stranger 192.0.2.3")?;
    let ttl = format!("{TTL_SECS}s");
    let lab = MailLab::start(&ttl, &[])?;
    lab.lab.add_client_address(&format!("{STRANGER}/24"))?;
    println!("   smtpgate is attached to the server's interface (XDP) and follows Dovecot's log; grants last {ttl}");

    step("A stranger tries to relay through the server")?;
    try_smtp(&lab, "stranger", STRANGER)?;
    step("The customer tries to send before fetching mail")?;
    try_smtp(&lab, "customer", CUSTOMER)?;
    counters(&lab)?;

    step("The customer fetches mail over POP3 (curl pop3://customer:secret@192.0.2.1/)")?;
    match lab.pop3_login_from(CUSTOMER.parse()?, "secret")? {
        Login::Accepted => println!("   POP3 login accepted"),
        Login::Refused => bail!("the POP3 login was refused"),
    }
    let waited = lab.wait_for_grant(CUSTOMER.parse()?, Duration::from_secs(5))?;
    println!("   smtpgate saw the login in Dovecot's log and granted {CUSTOMER} ({waited:?} after the login finished)");

    step("The customer sends mail")?;
    let queue_id = lab.send_mail(Family::V4, "Hello from the demo")?;
    lab.postfix
        .wait_for_delivery(&queue_id, Duration::from_secs(20))?;
    println!("   Postfix accepted the message (queue id {queue_id}) and delivered it");

    step("The stranger tries again")?;
    try_smtp(&lab, "stranger", STRANGER)?;
    counters(&lab)?;

    step(&format!(
        "Waiting for the customer's grant to expire ({TTL_SECS} s after the login)"
    ))?;
    lab.wait_for_expiry(CUSTOMER.parse()?, Duration::from_secs(TTL_SECS + 5))?;
    pause(Duration::from_millis(500))?;
    try_smtp(&lab, "customer", CUSTOMER)?;
    println!("   the customer must fetch mail again before sending");
    counters(&lab)?;

    step("Cleaning up")?;
    Ok(())
}
