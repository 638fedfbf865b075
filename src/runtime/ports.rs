//! Published ports: Docker's `-p`/`-P` as a box's record keeps them, as passt
//! is told them, and as `ps` and `inspect` show them.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port (a range is kept as one entry a port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it is bound to; `None`: every address.
    pub host_ip: Option<IpAddr>,
    /// 0 until the host picks one ([`assign_host_ports`]).
    pub host_port: u16,
    pub box_port: u16,
    pub proto: Proto,
}

/// A port specification Docker would refuse, or a port that cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(String);

fn err<T>(msg: String) -> Result<T, PortError> {
    Err(PortError(msg))
}

/// `N` or `N-M`, as a range of ports; `what` names the side for errors.
fn port_range(s: &str, what: &str) -> Result<(u16, u16), PortError> {
    let bad = || PortError(format!("invalid {what}: {s}"));
    let one = |p: &str| -> Result<u16, PortError> {
        match p.parse::<u32>() {
            Ok(n) if n <= u32::from(u16::MAX) => Ok(n as u16),
            _ => Err(bad()),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return err(format!("invalid range specified for {what}: {s}"));
            }
            Ok((a, b))
        }
        None => Ok((one(s)?, one(s)?)),
    }
}

/// Splits `[IP:][HOST:]BOX` at its last colons; an IPv6 address is in brackets.
fn split_spec(spec: &str) -> Result<(Option<&str>, Option<&str>, &str), PortError> {
    let (ip, rest) = if let Some(r) = spec.strip_prefix('[') {
        match r.split_once("]:") {
            Some((ip, rest)) => (Some(ip), rest),
            None => return err(format!("invalid IP address: {spec}")),
        }
    } else {
        (None, spec)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    Ok(match (ip, parts.as_slice()) {
        (None, [b]) => (None, None, b),
        (None, [h, b]) => (None, Some(h), b),
        (None, [ip, h, b]) => (Some(ip), Some(h), b),
        (Some(ip), [h, b]) => (Some(ip), Some(h), b),
        _ => return err(format!("invalid port format: {spec}")),
    })
}

/// One `-p` value: `80`, `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`,
/// `[::1]:8080:80`, `8080-8081:80-81`, each with an optional `/tcp` or `/udp`.
/// Host port 0: the host picks one.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortError> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some((_, p)) => return err(format!("invalid proto: {p}")),
        None => (spec, Proto::Tcp),
    };
    let (ip, host, boxp) = split_spec(addr)?;
    let host_ip = match ip.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| PortError(format!("invalid IP address: {s}")))?,
        ),
    };
    if boxp.is_empty() {
        return err(format!("no port specified: {spec}<empty>"));
    }
    let (b0, b1) = port_range(boxp, "containerPort")?;
    let hosts = match host.filter(|h| !h.is_empty()) {
        None => None,
        Some(h) => Some(port_range(h, "hostPort")?),
    };
    if b0 == 0 {
        return err(format!("invalid containerPort: {boxp}"));
    }
    let count = b1 - b0;
    if let Some((h0, h1)) = hosts {
        if h1 - h0 != count {
            return err(format!(
                "invalid ranges specified for container and host Ports: {boxp} and {}",
                host.unwrap_or_default()
            ));
        }
        if h0 == 0 && count > 0 {
            return err(format!("invalid hostPort: {}", host.unwrap_or_default()));
        }
    }
    Ok((0..=count)
        .map(|i| PortMapping {
            host_ip,
            host_port: hosts.map_or(0, |(h0, _)| if h0 == 0 { 0 } else { h0 + i }),
            box_port: b0 + i,
            proto,
        })
        .collect())
}

/// `-P`: each of the image's EXPOSEd ports (`80/tcp`, `53/udp`, `8080`) on a
/// port the host picks.
pub fn exposed_to_publish(exposed: &[String]) -> Result<Vec<PortMapping>, PortError> {
    let mut out = Vec::new();
    for e in exposed {
        if e.contains(':') {
            return err(format!("invalid exposed port: {e}"));
        }
        out.extend(parse_publish(e)?);
    }
    Ok(out)
}

fn unspecified(ip: Option<IpAddr>) -> IpAddr {
    ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Binds what a mapping would bind, and drops it.
fn try_bind(ip: IpAddr, port: u16, proto: Proto) -> std::io::Result<u16> {
    Ok(match proto {
        Proto::Tcp => std::net::TcpListener::bind((ip, port))?
            .local_addr()?
            .port(),
        Proto::Udp => std::net::UdpSocket::bind((ip, port))?.local_addr()?.port(),
    })
}

/// Gives each mapping with host port 0 a free port, as Docker picks one from
/// the kernel's ephemeral range.
pub fn assign_host_ports(maps: &mut [PortMapping]) -> std::io::Result<()> {
    for m in maps.iter_mut().filter(|m| m.host_port == 0) {
        m.host_port = try_bind(unspecified(m.host_ip), 0, m.proto)?;
    }
    Ok(())
}

/// Every host port can be bound now (a box's passt binds them at start).
pub fn check_free(maps: &[PortMapping]) -> Result<(), PortError> {
    for (i, m) in maps.iter().enumerate() {
        let ip = unspecified(m.host_ip);
        let twice = maps[..i]
            .iter()
            .any(|o| o.host_port == m.host_port && o.proto == m.proto);
        match try_bind(ip, m.host_port, m.proto) {
            Ok(_) if !twice => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return err(format!(
                    "cannot bind {}:{}: permission denied (ports below 1024 need privileges)",
                    host_ip_text(m.host_ip),
                    m.host_port
                ))
            }
            _ => {
                return err(format!(
                    "Bind for {}:{} failed: port is already allocated",
                    host_ip_text(m.host_ip),
                    m.host_port
                ))
            }
        }
    }
    Ok(())
}

fn host_ip_text(ip: Option<IpAddr>) -> String {
    match unspecified(ip) {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// passt's `-t`/`-u` options: `HOST:BOX`, or `ADDR/HOST:BOX` when bound to
/// one address.
pub fn passt_args(maps: &[PortMapping]) -> Vec<String> {
    let mut args = Vec::new();
    for m in maps {
        args.push(match m.proto {
            Proto::Tcp => "-t".to_string(),
            Proto::Udp => "-u".to_string(),
        });
        args.push(match m.host_ip {
            Some(ip) => format!("{ip}/{}:{}", m.host_port, m.box_port),
            None => format!("{}:{}", m.host_port, m.box_port),
        });
    }
    args
}

/// `docker ps`'s PORTS: `0.0.0.0:8080->80/tcp`, consecutive ports of one
/// address and protocol folded into a range, sorted by box port and protocol.
pub fn ps_ports(maps: &[PortMapping]) -> String {
    let mut sorted: Vec<&PortMapping> = maps.iter().collect();
    sorted.sort_by_key(|m| (m.proto, m.host_ip, m.box_port, m.host_port));
    let mut runs: Vec<(&PortMapping, u16)> = Vec::new();
    for m in sorted {
        if let Some((first, n)) = runs.last_mut() {
            let next = u32::from(*n) + 1;
            if first.proto == m.proto
                && first.host_ip == m.host_ip
                && u32::from(first.box_port) + next == u32::from(m.box_port)
                && u32::from(first.host_port) + next == u32::from(m.host_port)
            {
                *n += 1;
                continue;
            }
        }
        runs.push((m, 0));
    }
    runs.sort_by_key(|(m, _)| (m.box_port, m.proto));
    let mut out = String::new();
    for (m, n) in runs {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let ip = host_ip_text(m.host_ip);
        if n == 0 {
            let _ = write!(
                out,
                "{ip}:{}->{}/{}",
                m.host_port,
                m.box_port,
                m.proto.name()
            );
        } else {
            let _ = write!(
                out,
                "{ip}:{}-{}->{}-{}/{}",
                m.host_port,
                m.host_port + n,
                m.box_port,
                m.box_port + n,
                m.proto.name()
            );
        }
    }
    out
}

fn bindings(maps: &[PortMapping], any: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for m in maps {
        let key = format!("{}/{}", m.box_port, m.proto.name());
        let ip = m
            .host_ip
            .map_or_else(|| any.to_string(), |ip| ip.to_string());
        let entry = serde_json::json!({"HostIp": ip, "HostPort": m.host_port.to_string()});
        match out.get_mut(&key) {
            Some(serde_json::Value::Array(list)) => list.push(entry),
            _ => {
                out.insert(key, serde_json::Value::Array(vec![entry]));
            }
        }
    }
    serde_json::Value::Object(out)
}

/// `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
pub fn inspect_ports(maps: &[PortMapping]) -> serde_json::Value {
    bindings(maps, "0.0.0.0")
}

/// `HostConfig.PortBindings`: as asked, so `HostIp` is `""` when none was given.
pub fn inspect_port_bindings(maps: &[PortMapping]) -> serde_json::Value {
    bindings(maps, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: Option<&str>, host: u16, boxp: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_port: host,
            box_port: boxp,
            proto,
        }
    }

    #[test]
    fn dockers_forms_parse() {
        use Proto::*;
        let p = |s: &str| parse_publish(s).unwrap();
        assert_eq!(p("80"), vec![m(None, 0, 80, Tcp)]);
        assert_eq!(p("80/udp"), vec![m(None, 0, 80, Udp)]);
        assert_eq!(p("8080:80"), vec![m(None, 8080, 80, Tcp)]);
        assert_eq!(
            p("127.0.0.1:8080:80/tcp"),
            vec![m(Some("127.0.0.1"), 8080, 80, Tcp)]
        );
        assert_eq!(p("127.0.0.1::80"), vec![m(Some("127.0.0.1"), 0, 80, Tcp)]);
        assert_eq!(p("[::1]:8080:80"), vec![m(Some("::1"), 8080, 80, Tcp)]);
        assert_eq!(
            p("8080-8081:80-81"),
            vec![m(None, 8080, 80, Tcp), m(None, 8081, 81, Tcp)]
        );
        assert_eq!(p("80-81"), vec![m(None, 0, 80, Tcp), m(None, 0, 81, Tcp)]);
        assert_eq!(p("0:80"), vec![m(None, 0, 80, Tcp)]);
    }

    #[test]
    fn bad_specs_get_dockers_words() {
        let e = |s: &str| parse_publish(s).unwrap_err().to_string();
        assert_eq!(e("80:"), "no port specified: 80:<empty>");
        assert_eq!(e("99999:80"), "invalid hostPort: 99999");
        assert_eq!(e("a:b"), "invalid containerPort: b");
        assert_eq!(e("a:80"), "invalid hostPort: a");
        assert_eq!(e("80/sctp"), "invalid proto: sctp");
        assert_eq!(e("1.2.3:80:80"), "invalid IP address: 1.2.3");
        assert_eq!(
            e("8080-8082:80-81"),
            "invalid ranges specified for container and host Ports: 80-81 and 8080-8082"
        );
        assert_eq!(e("8000-8010:80"), e("8000-8010:80"));
        assert!(e("8000-8010:80").starts_with("invalid ranges specified"));
        assert_eq!(e("1:2:3:4"), "invalid port format: 1:2:3:4");
        assert_eq!(
            e("81-80"),
            "invalid range specified for containerPort: 81-80"
        );
        assert_eq!(e("0"), "invalid containerPort: 0");
    }

    #[test]
    fn exposed_ports_publish_on_ports_the_host_picks() {
        let maps = exposed_to_publish(&["80/tcp".into(), "53/udp".into()]).unwrap();
        assert_eq!(
            maps,
            vec![m(None, 0, 80, Proto::Tcp), m(None, 0, 53, Proto::Udp)]
        );
    }

    #[test]
    fn picked_ports_are_free_and_taken_ones_are_refused() {
        let mut maps = parse_publish("127.0.0.1::80").unwrap();
        assign_host_ports(&mut maps).unwrap();
        assert_ne!(maps[0].host_port, 0);
        check_free(&maps).unwrap();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let taken = parse_publish(&format!("127.0.0.1:{port}:80")).unwrap();
        assert_eq!(
            check_free(&taken).unwrap_err().to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        // The same port twice in one box.
        let mut twice = parse_publish("127.0.0.1::80").unwrap();
        assign_host_ports(&mut twice).unwrap();
        let again = PortMapping {
            box_port: 81,
            ..twice[0].clone()
        };
        twice.push(again);
        assert!(check_free(&twice).is_err());
    }

    #[test]
    fn passt_is_told_each_port() {
        let maps = vec![
            m(None, 8080, 80, Proto::Tcp),
            m(Some("127.0.0.1"), 5353, 53, Proto::Udp),
        ];
        assert_eq!(
            passt_args(&maps),
            ["-t", "8080:80", "-u", "127.0.0.1/5353:53"]
        );
    }

    #[test]
    fn ps_folds_ranges_as_docker() {
        let mut maps = parse_publish("8080-8081:80-81").unwrap();
        maps.push(m(Some("127.0.0.1"), 9000, 90, Proto::Udp));
        maps.push(m(Some("::1"), 7000, 70, Proto::Tcp));
        assert_eq!(
            ps_ports(&maps),
            "[::1]:7000->70/tcp, 0.0.0.0:8080-8081->80-81/tcp, 127.0.0.1:9000->90/udp"
        );
        assert_eq!(ps_ports(&[]), "");
    }

    #[test]
    fn inspect_shapes_are_dockers() {
        let maps = vec![
            m(None, 8080, 80, Proto::Tcp),
            m(Some("127.0.0.1"), 8081, 80, Proto::Tcp),
        ];
        assert_eq!(
            inspect_ports(&maps),
            serde_json::json!({"80/tcp": [
                {"HostIp": "0.0.0.0", "HostPort": "8080"},
                {"HostIp": "127.0.0.1", "HostPort": "8081"},
            ]})
        );
        assert_eq!(
            inspect_port_bindings(&maps[..1]),
            serde_json::json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
        );
    }
}
