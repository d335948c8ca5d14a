//! A login hook's report: the line `smtpgate notify` writes to the agent's
//! socket after a successful login, `IP SERVICE [USER]`.

use std::fmt;
use std::net::IpAddr;

use crate::addr::customer_address;
use crate::Service;

/// The longest report line; a report is an address and two short words.
pub const MAX_REPORT: usize = 512;

/// A successful login reported by a login hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The client address that logged in; `::ffff:a.b.c.d` becomes IPv4.
    pub ip: IpAddr,
    pub service: Service,
    /// The user name, for the agent's log; empty if not given.
    pub user: String,
}

/// Why a report line is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// Longer than [`MAX_REPORT`] bytes.
    TooLong,
    /// Holds a control character other than a tab between fields.
    ControlCharacter,
    /// Not `IP SERVICE [USER]`.
    Shape,
    /// The first field is no address.
    NotAnAddress(String),
    /// The address cannot be a customer's.
    NoCustomer(IpAddr, &'static str),
    /// The second field names no service.
    UnknownService(String),
    /// More than three fields.
    ExtraField(String),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::TooLong => write!(f, "report longer than {MAX_REPORT} bytes"),
            ReportError::ControlCharacter => f.write_str("the report holds a control character"),
            ReportError::Shape => f.write_str("expected 'IP SERVICE [USER]'"),
            ReportError::NotAnAddress(text) => write!(f, "'{text}' is not an IPv4 or IPv6 address"),
            ReportError::NoCustomer(ip, reason) => write!(f, "{ip}: {reason}"),
            ReportError::UnknownService(name) => {
                write!(f, "unknown service '{name}' (expected pop3 or imap)")
            }
            ReportError::ExtraField(field) => {
                write!(f, "unexpected field '{field}' after 'IP SERVICE USER'")
            }
        }
    }
}

impl std::error::Error for ReportError {}

impl Report {
    /// Reads one report line (without its line end). Fields are separated
    /// by runs of spaces or tabs; a user name is one word.
    pub fn parse(line: &str) -> Result<Report, ReportError> {
        if line.len() > MAX_REPORT {
            return Err(ReportError::TooLong);
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ReportError::ControlCharacter);
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(ip), Some(service)) = (fields.next(), fields.next()) else {
            return Err(ReportError::Shape);
        };
        let ip = ip
            .parse::<IpAddr>()
            .map_err(|_| ReportError::NotAnAddress(ip.to_owned()))?
            .to_canonical();
        customer_address(ip).map_err(|reason| ReportError::NoCustomer(ip, reason))?;
        let service = service
            .parse::<Service>()
            .map_err(|_| ReportError::UnknownService(service.to_owned()))?;
        let user = fields.next().unwrap_or_default().to_owned();
        if let Some(extra) = fields.next() {
            return Err(ReportError::ExtraField(extra.to_owned()));
        }
        Ok(Report { ip, service, user })
    }

    /// The report as a line (with its `\n`), as [`Report::parse`] reads it.
    /// `None` if the user name is not one word, or the line too long.
    pub fn to_line(&self) -> Option<String> {
        let one_word =
            !self.user.is_empty() && !self.user.contains(|c: char| c.is_ascii_whitespace());
        let line = match self.user.as_str() {
            "" => format!("{} {}\n", self.ip, self.service),
            user if one_word => format!("{} {} {user}\n", self.ip, self.service),
            _ => return None,
        };
        (line.len() <= MAX_REPORT).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ip: &str, service: Service, user: &str) -> Report {
        Report {
            ip: ip.parse().unwrap(),
            service,
            user: user.into(),
        }
    }

    #[test]
    fn reports_parse() {
        assert_eq!(
            Report::parse("192.0.2.7 imap alice"),
            Ok(report("192.0.2.7", Service::Imap, "alice"))
        );
        assert_eq!(
            Report::parse("::ffff:198.51.100.2\tPOP3"),
            Ok(report("198.51.100.2", Service::Pop3, ""))
        );
        let round = report("2001:db8::5", Service::Pop3, "bob@example.org");
        assert_eq!(
            Report::parse(round.to_line().unwrap().trim_end()),
            Ok(round)
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let err = |line: &str| Report::parse(line).unwrap_err().to_string();
        assert_eq!(err("192.0.2.7"), "expected 'IP SERVICE [USER]'");
        assert_eq!(
            err("nowhere imap"),
            "'nowhere' is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            err("192.0.2.7 smtp"),
            "unknown service 'smtp' (expected pop3 or imap)"
        );
        assert_eq!(
            err("192.0.2.7 imap alice 6.6.6.6"),
            "unexpected field '6.6.6.6' after 'IP SERVICE USER'"
        );
        assert!(err("0.0.0.0 imap").starts_with("0.0.0.0: unspecified"));
        assert!(err(":: imap").contains("unspecified"));
        assert!(err("255.255.255.255 imap").contains("broadcast"));
        assert!(err("224.0.0.5 pop3").contains("multicast"));
        assert!(err("ff05::2 pop3").contains("multicast"));
        assert!(err("127.0.0.1 pop3").contains("loopback"));
        assert!(err(&format!("192.0.2.7 imap {}", "u".repeat(600))).contains("longer than"));
        // Found by the notify_report fuzz target: a vertical tab is no
        // field separator, and no user name either.
        assert_eq!(
            err(" ::5 pop\r\x0b\r"),
            "the report holds a control character"
        );
        assert_eq!(
            err("192.0.2.7 imap al\x1bice"),
            "the report holds a control character"
        );
    }

    #[test]
    fn lines_with_spaced_users_are_not_written() {
        assert_eq!(report("192.0.2.7", Service::Imap, "a b").to_line(), None);
        assert_eq!(
            report("192.0.2.7", Service::Imap, &"u".repeat(600)).to_line(),
            None
        );
    }
}
