//! The harness's keep-alive HTTP/1.1 client (plain HTTP, `Content-Length`, chunked or
//! close-delimited bodies): what the load tests use to hold one connection per session.
//! A test utility only; `tether probe` uses reqwest.
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response head or body the client accepts (a guard against runaway servers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// As written, for the `Host` header (`example.com:8080`, `[::1]:10000`).
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(format!(
                    "`{text}`: https is not supported (the probe speaks plain HTTP/1.1); \
                     probe the plain-HTTP listener, e.g. a port-forward to the ingress gateway"
                ))
            }
            Some((scheme, _)) => {
                return Err(format!("`{text}`: unsupported scheme `{scheme}` (use http://)"))
            }
            None => return Err(format!("`{text}` is not a URL: expected http://host[:port]/path")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.is_empty() {
            return Err(format!("`{text}`: no host"));
        }
        if authority.contains('@') {
            return Err(format!("`{text}`: user:password@ in URLs is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) =
                v6.split_once(']').ok_or_else(|| format!("`{text}`: unterminated IPv6 address"))?;
            let port = match after {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("`{text}`: bad port `{after}`"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("`{text}`: bad port `{p}`"))?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{text}`: bad host or path"));
        }
        Ok(Url { authority: authority.to_string(), host, port, path })
    }

    /// Resolves the host (DNS or literal) to its first address.
    pub fn resolve(&self) -> Result<SocketAddr, Error> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Error::Resolve(self.host.clone(), e.to_string()))?
            .next()
            .ok_or_else(|| Error::Resolve(self.host.clone(), "no address".into()))
    }
}

#[derive(Debug)]
pub enum Error {
    Resolve(String, String),
    Connect(SocketAddr, io::Error),
    /// The request could not be sent or the response not read.
    Io(io::Error),
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve(host, why) => write!(f, "cannot resolve `{host}`: {why}"),
            Error::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            Error::Io(e) => write!(f, "connection failed: {e}"),
            Error::Protocol(why) => write!(f, "bad HTTP response: {why}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order, repeated headers kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection to one address. A request on a reused connection that the
/// server had closed meanwhile is sent once more on a new connection (as browsers do);
/// `resends` counts those second sends, so a caller can tell them from first answers.
pub struct Connection {
    addr: SocketAddr,
    authority: String,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    resends: u64,
}

impl Connection {
    pub fn new(addr: SocketAddr, authority: &str, timeout: Duration) -> Connection {
        Connection { addr, authority: authority.to_string(), timeout, stream: None, resends: 0 }
    }

    /// How many requests were sent a second time after their reused connection failed.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `method path` with `headers` (and no body) and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.authority);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let reused = self.stream.is_some();
        match self.exchange(method, req.as_bytes()) {
            Err(Error::Io(e)) if reused && is_stale(&e) => {
                self.stream = None;
                self.resends += 1;
                self.exchange(method, req.as_bytes())
            }
            other => other,
        }
    }

    fn exchange(&mut self, method: &str, req: &[u8]) -> Result<Response, Error> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| Error::Connect(self.addr, e))?;
            stream.set_nodelay(true).map_err(Error::Io)?;
            stream.set_read_timeout(Some(self.timeout)).map_err(Error::Io)?;
            stream.set_write_timeout(Some(self.timeout)).map_err(Error::Io)?;
            self.stream = Some(BufReader::new(stream));
        }
        let result = self.exchange_on_stream(method, req);
        match &result {
            Ok((_, keep)) if *keep => {}
            _ => self.stream = None,
        }
        result.map(|(r, _)| r)
    }

    fn exchange_on_stream(&mut self, method: &str, req: &[u8]) -> Result<(Response, bool), Error> {
        let reader = self.stream.as_mut().ok_or_else(|| Error::Protocol("no connection".into()))?;
        reader.get_mut().write_all(req).map_err(Error::Io)?;
        read_response(reader, method == "HEAD")
    }
}

/// The errors a reused keep-alive connection gives when the server closed it while idle.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads one response; returns it and whether the connection can be reused.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> Result<(Response, bool), Error> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head).map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if before == 0 { "server closed the connection without answering" } else { "truncated head" },
            )));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(Error::Protocol(format!("response head larger than {MAX_HEAD} bytes")));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = match (version.starts_with("HTTP/1."), parts.next().and_then(|s| s.parse().ok())) {
        (true, Some(code)) => code,
        _ => return Err(Error::Protocol(format!("not an HTTP/1.x status line: {status_line:?}"))),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
    let mut keep_alive = match find("connection") {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version == "HTTP/1.1",
    };
    let no_body = head_only || status / 100 == 1 || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(reader)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| Error::Protocol(format!("bad content-length {len:?}")))?;
        if len > MAX_BODY {
            return Err(Error::Protocol(format!("body of {len} bytes is larger than {MAX_BODY}")));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(Error::Io)?;
        body
    } else {
        keep_alive = false;
        let mut body = Vec::new();
        reader.take(MAX_BODY as u64).read_to_end(&mut body).map_err(Error::Io)?;
        body
    };
    if status == 101 {
        keep_alive = false;
    }
    Ok((Response { status, headers, body }, keep_alive))
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(Error::Io)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Error::Protocol(format!("bad chunk size {:?}", line.trim())))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                let n = reader.read_line(&mut trailer).map_err(Error::Io)?;
                if n == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(Error::Protocol(format!("chunked body larger than {MAX_BODY} bytes")));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(Error::Io)?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).map_err(Error::Io)?;
    }
}
