//! The stand-in "target" service: a tiny static HTTP/1.0 server over a directory, and the known
//! content it serves (a small index page and a large pseudo-random file, both derived from a
//! per-network nonce so a test can tell this network's bytes from any other's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TestnetError;

/// Name of the index page inside the content directory.
pub const INDEX: &str = "index.html";
/// Name of the large file inside the content directory.
pub const LARGE: &str = "large.bin";
/// Default size of the large file: big enough to measure throughput, small enough for CI.
pub const DEFAULT_LARGE_BYTES: u64 = 8 * 1024 * 1024;

/// The index page for a nonce.
pub fn index_body(nonce: &str) -> Vec<u8> {
    format!(
        "<!doctype html>\n<html><head><title>RustBalance test target</title></head>\n\
         <body><h1>RustBalance test target</h1><p>network nonce {nonce}</p></body></html>\n"
    )
    .into_bytes()
}

/// Deterministic pseudo-random bytes (xorshift64*) for the large file, seeded by the nonce.
pub fn large_body(nonce: &str, len: u64) -> Vec<u8> {
    let mut x: u64 = nonce.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    }) | 1;
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// Writes the content directory for a nonce.
pub fn write_content(dir: &Path, nonce: &str, large_bytes: u64) -> Result<(), TestnetError> {
    std::fs::create_dir_all(dir).map_err(TestnetError::io(dir))?;
    let index = dir.join(INDEX);
    std::fs::write(&index, index_body(nonce)).map_err(TestnetError::io(&index))?;
    let large = dir.join(LARGE);
    std::fs::write(&large, large_body(nonce, large_bytes)).map_err(TestnetError::io(&large))?;
    Ok(())
}

/// Maps a request path to a file directly inside `root` (no sub-directories, no traversal).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let name = path.strip_prefix('/')?;
    let name = if name.is_empty() { INDEX } else { name };
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !name.starts_with('.');
    ok.then(|| root.join(name))
}

/// Serves `root` on `listen` until the process is killed. One thread per connection.
pub fn serve(root: PathBuf, listen: SocketAddr) -> Result<(), TestnetError> {
    let listener = TcpListener::bind(listen).map_err(|source| TestnetError::PortInUse {
        port: listen.port(),
        what: "sample HTTP target".into(),
        source,
    })?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &root);
        });
    }
    Ok(())
}

fn handle(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?.take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded by `take`).
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 || l == "\r\n" || l == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_ascii_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut out = conn;
    let file = (method == "GET" || method == "HEAD")
        .then(|| resolve(root, path))
        .flatten()
        .and_then(|p| std::fs::File::open(p).ok());
    match file {
        Some(mut f) => {
            let len = f.metadata()?.len();
            write!(
                out,
                "HTTP/1.0 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
                 Connection: close\r\n\r\n"
            )?;
            if method == "GET" {
                std::io::copy(&mut f, &mut out)?;
            }
        }
        None => {
            out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_per_nonce() {
        assert_eq!(large_body("a", 1000), large_body("a", 1000));
        assert_ne!(large_body("a", 1000), large_body("b", 1000));
        assert_eq!(large_body("a", 13).len(), 13);
        assert!(String::from_utf8(index_body("n1")).unwrap().contains("n1"));
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let r = Path::new("/srv");
        assert_eq!(resolve(r, "/"), Some(r.join(INDEX)));
        assert_eq!(resolve(r, "/large.bin?x=1"), Some(r.join(LARGE)));
        assert_eq!(resolve(r, "/../etc/passwd"), None);
        assert_eq!(resolve(r, "/a/b"), None);
        assert_eq!(resolve(r, "/.hidden"), None);
        assert_eq!(resolve(r, "x"), None);
    }

    #[test]
    fn serves_files_over_tcp() {
        let dir = std::env::temp_dir().join(format!("testnet-target-{}", std::process::id()));
        write_content(&dir, "n", 100_000).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let root = dir.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let _ = handle(c, &root);
            }
        });
        let get = |p: &str| {
            let s = TcpStream::connect(addr).unwrap();
            crate::client::http_get_on(s, "x", p).unwrap()
        };
        let r = get("/");
        assert_eq!((r.status, r.body), (200, index_body("n")));
        let r = get("/large.bin");
        assert_eq!(r.body, large_body("n", 100_000));
        assert_eq!(get("/nope").status, 404);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
