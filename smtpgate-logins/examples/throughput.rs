//! Measures single-core throughput on a mix of Dovecot successes, failures
//! and unrelated lines, the load the agent must sustain (≥ 1,000,000
//! lines/s). Run with `cargo run --release -p smtpgate-logins --example
//! throughput [LINES]`.

use std::hint::black_box;
use std::time::Instant;

use smtpgate_logins::{Parser, ParserOptions, Verdict};

const MIX: [&[u8]; 6] = [
    b"Nov 22 20:25:01 mailhost dovecot: pop3-login: Login: user=<alice@example.org>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=4242, TLS, session=<n8C0SGQDKMDAAgAK>\n",
    b"Nov 22 20:25:02 mailhost dovecot[1234]: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, TLS, session=<GIYZ4Z+GaCt/AAAB>\n",
    b"Nov 22 20:25:03 mailhost dovecot[1234]: imap-login: Logged in: user=<carol>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, mpid=4244, TLS, session=<abcdEFGH1234>\n",
    b"Nov 22 20:25:04 mailhost dovecot: pop3-login: Aborted login (no auth attempts in 0 secs): user=<>, rip=203.0.113.9, lip=192.0.2.1, session=<C6PN4M+q2MTAqAJu>\n",
    b"Nov 22 20:25:05 mailhost dovecot: imap(alice)<4243><GIYZ4Z+GaCt/AAAB>: Logged out in=82 out=894 deleted=0 expunged=0 trashed=0 hdr_count=0\n",
    b"Nov 22 20:25:06 mailhost postfix/smtpd[4711]: connect from client.example[192.0.2.130]\n",
];

fn main() {
    let lines: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("LINES must be a number"))
        .unwrap_or(3_000_000);
    let parser = Parser::new(ParserOptions::default()).expect("default options are valid");
    let now = jiff::Timestamp::now();
    let start = Instant::now();
    let mut grants = 0usize;
    for line in MIX.iter().cycle().take(lines) {
        if let Verdict::Grant(login) = parser.parse(black_box(line), now) {
            grants += black_box(login).user.len().min(1);
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{lines} lines ({grants} grants) in {elapsed:.2?}: {:.0} lines/s",
        lines as f64 / elapsed.as_secs_f64()
    );
}
