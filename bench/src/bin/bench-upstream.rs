//! A fast HTTP/1.1 keep-alive upstream for `make bench`: one thread per connection, a fixed
//! small answer naming the port. Loopback only.
//!
//!     bench-upstream 18081 18082 18083
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream, port: u16) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let body = format!("pod-{port}\n");
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-pod: pod-{port}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut line = String::new();
    loop {
        // Request line and headers; bodies (content-length) are read and dropped.
        let mut length = 0usize;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if length > 0 {
            std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        }
        writer.write_all(answer.as_bytes())?;
    }
}

fn main() {
    let ports: Vec<u16> = std::env::args().skip(1).filter_map(|p| p.parse().ok()).collect();
    if ports.is_empty() {
        eprintln!("usage: bench-upstream PORT [PORT...]");
        std::process::exit(2);
    }
    let mut handles = Vec::new();
    for port in ports {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
            eprintln!("bench-upstream: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        });
        handles.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve(stream, port);
                });
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}
