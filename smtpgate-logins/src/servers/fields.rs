//! Reading the fields that several servers' success lines share: words,
//! client host names and bracketed addresses.

use std::net::IpAddr;

use memchr::memchr;

use crate::addr::parse_ip;

/// Splits at the first space: the word before it and the text after it.
pub(super) fn word(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b' ', text) {
        Some(end) => (&text[..end], &text[end + 1..]),
        None => (text, &[]),
    }
}

/// A host name as servers print reverse-DNS results: letters, digits, `.`,
/// `-` and `_`, nothing a client could use to imitate an address field.
pub(super) fn is_host_name(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `[ip]` at the start of `text`; returns the address and the text after `]`.
pub(super) fn bracketed_ip(text: &[u8]) -> Option<(IpAddr, &[u8])> {
    let inner = text.strip_prefix(b"[")?;
    let close = memchr(b']', inner)?;
    Some((parse_ip(&inner[..close])?, &inner[close + 1..]))
}

/// `[ip]` or `name [ip]`, the client host as UW IMAP and Cyrus print it;
/// with `joined` also `name[ip]`, as older Cyrus releases print it.
/// Returns the address and the text after `]`.
pub(super) fn host_and_ip(text: &[u8], joined: bool) -> Option<(IpAddr, &[u8])> {
    if text.starts_with(b"[") {
        return bracketed_ip(text);
    }
    let open = memchr(b'[', text)?;
    let name = match text[..open].strip_suffix(b" ") {
        Some(name) => name,
        None if joined => &text[..open],
        None => return None,
    };
    if !is_host_name(name) {
        return None;
    }
    bracketed_ip(&text[open..])
}

/// Whether `text` is a non-empty run of ASCII digits.
pub(super) fn is_number(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_ip_forms() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        for joined in [false, true] {
            let host_and_ip = |text| host_and_ip(text, joined);
            assert_eq!(host_and_ip(b"[192.0.2.10] rest"), Some((ip, &b" rest"[..])));
            assert_eq!(
                host_and_ip(b"host.example [192.0.2.10]"),
                Some((ip, &b""[..]))
            );
            assert_eq!(
                host_and_ip(b"host.example [::ffff:192.0.2.10]x"),
                Some((ip, &b"x"[..]))
            );
            assert_eq!(host_and_ip(b"evil\" [192.0.2.10]"), None);
            assert_eq!(host_and_ip(b"host.example  [192.0.2.10]"), None);
            assert_eq!(host_and_ip(b"host.example [192.0.2.10"), None);
            assert_eq!(host_and_ip(b"a b [192.0.2.10]"), None);
        }
        assert_eq!(host_and_ip(b"host.example[192.0.2.10]", false), None);
        assert_eq!(
            host_and_ip(b"host.example[192.0.2.10]", true),
            Some((ip, &b""[..]))
        );
    }
}
