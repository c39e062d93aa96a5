//! The character-level rules of Octavia's L7 validation
//! (`octavia/common/validate.py`, `octavia/common/constants.py`), as pure
//! functions: header and cookie names, header and cookie values, redirect
//! URLs, regular expressions, health-check domain names, cookie names of
//! session persistence, and which pool protocols a listener protocol may
//! use. They return whether (or why not) a value passes; the callers turn
//! that into Octavia's message. Never reads the state.

use crate::model::LbProtocol;

/// `HTTP_HEADER_NAME_REGEX` = `\A[a-zA-Z0-9!#$%&'*+-.^_`|~]+\Z`. As in
/// Octavia, `+-.` is a range: `,` passes too.
pub fn header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+,-.^_`|~".contains(&b))
}

/// `HTTP_COOKIE_VALUE_REGEX` = `\A[a-zA-Z0-9!#$%&'()*+-./:<=>?@[\]^_`{|}~]+\Z`
/// (again with `,` from the `+-.` range; no space, `"`, `;` or `\`).
pub fn cookie_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'()*+,-./:<=>?@[]^_`{|}~".contains(&b))
}

/// `HTTP_HEADER_VALUE_REGEX` (visible ASCII, `!` to `~`, at least one) or
/// `HTTP_QUOTED_HEADER_VALUE_REGEX` (the same plus space and tab, between
/// double quotes).
pub fn header_value(s: &str) -> bool {
    let visible = |b: u8| (0x21..=0x7e).contains(&b);
    if !s.is_empty() && s.bytes().all(visible) {
        return true;
    }
    s.len() >= 2
        && s.starts_with('"')
        && s.ends_with('"')
        && s.bytes().all(|b| visible(b) || b == b' ' || b == b'\t')
}

/// A regular expression the proxy can compile. Octavia compiles with
/// Python's `re`; this is Rust's `regex`, which has no look-around and no
/// backreferences (refused here, accepted by Octavia) and knows `\p{..}`
/// classes (accepted here, refused by Python). `Err`: the parser's
/// message on one line.
pub fn regex(s: &str) -> Result<(), String> {
    regex::Regex::new(s).map(|_| ()).map_err(|e| {
        e.to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Octavia's `validate.url` (what `redirect_url` and `redirect_prefix`
/// must be): no control characters, spaces or C1 characters
/// (`[\x00-\x20\x7f-\x9f]`), scheme `http` or `https`, a host, and an
/// authority and path made of RFC 3986 characters.
pub fn url(s: &str) -> bool {
    if s.chars()
        .any(|c| matches!(c as u32, 0x00..=0x20 | 0x7f..=0x9f))
    {
        return false;
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port, v6) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) if h.parse::<std::net::Ipv6Addr>().is_ok() => (h, p, true),
            _ => return false,
        }
    } else {
        match host_port.find(':') {
            Some(i) => (&host_port[..i], &host_port[i..], false),
            None => (host_port, "", false),
        }
    };
    if host.is_empty() {
        return false;
    }
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    let reg_name = |h: &str| h.chars().all(|c| unreserved(c) || sub_delim(c) || c == '%');
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    let path_ok = path
        .chars()
        .all(|c| unreserved(c) || sub_delim(c) || matches!(c, '%' | ':' | '@' | '/'));
    port_ok && (v6 || reg_name(host)) && path_ok
}

fn unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fn sub_delim(c: char) -> bool {
    matches!(
        c,
        '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '='
    )
}

/// `DOMAIN_NAME_REGEX` =
/// `^(?=.{1,253}\.?$)(?:(?!-|[^.]+_)[A-Za-z0-9-_]{1,63}(?<!-)(?:\.|$))+$`:
/// at most 253 characters (a trailing dot aside), labels of 1 to 63
/// letters, digits, `-` and `_`, not starting or ending with `-`, with `_`
/// only as a label's first character.
pub fn domain_name(s: &str) -> bool {
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() || body.len() > 253 {
        return false;
    }
    body.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !l[1..].contains('_')
    })
}

/// Octavia's `check_session_persistence` cookie name rule: none of
/// `[\x00-\x20\x22\x28-\x29\x2c\x2f\x3a-\x40\x5b-\x5d\x7b\x7d\x7f]`
/// (controls, space, `"(),/:;<=>?@[\]{}` and DEL), and the type's
/// pattern `^[^\s,;\\]+$`; at most 255 characters.
pub fn cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= 255
        && s.chars().all(|c| {
            let b = c as u32;
            !(b <= 0x20
                || b == 0x22
                || (0x28..=0x29).contains(&b)
                || b == 0x2c
                || b == 0x2f
                || (0x3a..=0x40).contains(&b)
                || (0x5b..=0x5d).contains(&b)
                || b == 0x7b
                || b == 0x7d
                || b == 0x7f
                || c.is_whitespace())
        })
}

/// Octavia's `VALID_LISTENER_POOL_PROTOCOL_MAP`, restricted to the
/// protocols Strato has (`PROXY` and `PROXYV2` pools, `SCTP` are refused
/// before this is asked).
pub fn pool_protocol_allowed(listener: LbProtocol, pool: LbProtocol) -> bool {
    use LbProtocol::*;
    match listener {
        Tcp => matches!(pool, Http | Https | Tcp),
        Http => matches!(pool, Http),
        Https => matches!(pool, Https | Tcp),
        TerminatedHttps => matches!(pool, Http),
        Udp => matches!(pool, Udp),
    }
}

/// Octavia's 400 when a pool's protocol does not fit its listener's.
pub fn protocol_mismatch(pool: LbProtocol, listener: LbProtocol) -> crate::error::ApiError {
    crate::error::ApiError::bad_request(format!(
        "Validation failure: The pool protocol '{}' is invalid while the listener protocol is '{}'.",
        pool.as_str(),
        listener.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_as_octavia() {
        for ok in ["X-Forwarded-For", "a", "x_y", "a,b", "~|`^"] {
            assert!(header_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a:b", "a\"", "a(b", "é", "a\r", "a/b", "a;b"] {
            assert!(!header_name(bad), "{bad}");
        }
    }

    #[test]
    fn values_as_octavia() {
        assert!(header_value("abc/def?x=1"));
        assert!(header_value("\"quoted value\twith tab\""));
        for bad in ["", "a b", "a\nb", "é", "\"a\nb\""] {
            assert!(!header_value(bad), "{bad:?}");
        }
        assert!(cookie_value("abc,def=1"));
        for bad in ["", "a b", "a;b", "a\"b", "a\\b", "é"] {
            assert!(!cookie_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn urls_as_octavia() {
        for ok in [
            "http://www.example.com",
            "https://example.com:8443/a/b?q=1#f",
            "http://10.0.0.1/",
            "http://[2001:db8::1]:80/x",
            "HTTPS://user@example.com/",
        ] {
            assert!(url(ok), "{ok}");
        }
        for bad in [
            "",
            "www.example.com",
            "ftp://example.com",
            "http://",
            "http:///path",
            "http://exa mple.com",
            "http://example.com/a\r\nSet-Cookie: x",
            "http://example.com/\u{85}",
            "http://example.com:80a/",
            "http://exa<mple.com/",
            "http://example.com/a\"b",
            "http://[zz::1]/",
        ] {
            assert!(!url(bad), "{bad:?}");
        }
    }

    #[test]
    fn regexes_compile_with_the_regex_crate() {
        assert!(regex("^/api/v[0-9]+/").is_ok());
        let e = regex("a(b").expect_err("unclosed group");
        assert!(!e.contains('\n'), "{e}");
        assert!(regex("(?=x)").is_err(), "look-around is not in regex");
        assert!(regex("(a)\\1").is_err(), "no backreferences");
    }

    #[test]
    fn domain_names_and_cookie_names() {
        for ok in ["example.com", "a.b-c.d", "_srv.example.com", "example.com."] {
            assert!(domain_name(ok), "{ok}");
        }
        for bad in ["", "-a.com", "a-.com", "a_b.com", "a..b", &"a".repeat(64)] {
            assert!(!domain_name(bad), "{bad}");
        }
        assert!(cookie_name("JSESSIONID"));
        for bad in ["", "a b", "a;b", "a,b", "a=b", "a\"", "a\\b", "a/b", "a\tb"] {
            assert!(!cookie_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn listener_pool_protocol_map() {
        use LbProtocol::*;
        let all = [Tcp, Udp, Http, Https, TerminatedHttps];
        let allowed: Vec<(LbProtocol, LbProtocol)> = all
            .iter()
            .flat_map(|l| all.iter().map(move |p| (*l, *p)))
            .filter(|(l, p)| pool_protocol_allowed(*l, *p))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Tcp, Tcp),
                (Tcp, Http),
                (Tcp, Https),
                (Udp, Udp),
                (Http, Http),
                (Https, Tcp),
                (Https, Https),
                (TerminatedHttps, Http),
            ]
        );
    }
}
