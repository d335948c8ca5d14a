//! Dovecot log lines as a mail server writes them to syslog.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A syslog time stamp (`Nov 22 20:25:01`) for now, in the system's time
/// zone, as syslog writes it and as the agent reads it by default.
pub fn syslog_stamp() -> String {
    jiff::Zoned::now().strftime("%b %e %H:%M:%S").to_string()
}

/// A successful POP3 login: the line that grants.
pub fn login(stamp: &str, user: u32, ip: IpAddr) -> String {
    format!(
        "{stamp} mail dovecot: pop3-login: Login: user=<u{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, \
         mpid={pid}, TLS, session=<s{user:x}>\n",
        pid = 1000 + user % 30000,
    )
}

/// A log of `lines` lines, a mix of what a busy Dovecot writes: successful
/// POP3 and IMAP logins (3 lines in 10), failed and aborted logins, and the
/// session lines around them. Addresses and user names vary from line to
/// line. Returns the log and how many of its lines grant.
pub fn mixed(stamp: &str, lines: usize) -> (Vec<u8>, usize) {
    let mut log = Vec::with_capacity(lines * 180);
    let mut grants = 0;
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for n in 0..lines {
        let user = random.next() as u32 % 100_000;
        let ip = client_address(random.next());
        let pid = 1000 + user % 30000;
        let line = match n % 10 {
            0 | 4 => login(stamp, user, ip),
            7 => format!(
                "{stamp} mail dovecot[812]: imap-login: Login: user=<u{user}@example.org>, method=PLAIN, \
                 rip={ip}, lip=192.0.2.1, mpid={pid}, TLS, session=<i{user:x}>\n"
            ),
            1 | 5 => format!(
                "{stamp} mail dovecot[812]: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): \
                 user=<u{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, TLS, session=<f{user:x}>\n"
            ),
            2 => format!(
                "{stamp} mail dovecot: pop3-login: Aborted login (no auth attempts in 0 secs): user=<>, \
                 rip={ip}, lip=192.0.2.1, session=<a{user:x}>\n"
            ),
            3 | 8 => format!(
                "{stamp} mail dovecot: pop3(u{user})<{pid}><s{user:x}>: Disconnected: Logged out \
                 top=0/0, retr=2/8412, del=2/2, size=8376\n"
            ),
            _ => format!(
                "{stamp} mail dovecot: imap(u{user}@example.org)<{pid}><i{user:x}>: Logged out in=82 out=894 \
                 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0\n"
            ),
        };
        if matches!(n % 10, 0 | 4 | 7) {
            grants += 1;
        }
        log.extend_from_slice(line.as_bytes());
    }
    (log, grants)
}

/// A client address from the documentation ranges: IPv4 mostly, one in
/// four IPv6.
fn client_address(bits: u64) -> IpAddr {
    let host = (bits >> 8) as u16;
    match bits % 8 {
        0 | 1 => Ipv6Addr::new(0x2001, 0xdb8, (bits >> 24) as u16, 0, 0, 0, 0, host).into(),
        2..=4 => Ipv4Addr::new(198, 51, 100, host as u8).into(),
        _ => Ipv4Addr::new(203, 0, 113, host as u8).into(),
    }
}

/// A tiny deterministic generator: the same log every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
