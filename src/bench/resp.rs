//! A minimal Redis client (RESP2): just enough for SET with EX, GET and GETDEL, one command in
//! flight per connection. It exists so the benchmark can drive Redis with the same tool and the
//! same concurrency as authstore, without another dependency.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Redis {
    stream: BufReader<TcpStream>,
    line: String,
}

impl Redis {
    pub async fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Redis { stream: BufReader::new(stream), line: String::new() })
    }

    /// Sends one command and reads its reply; returns the bulk string, if any.
    pub async fn command(&mut self, args: &[&[u8]]) -> io::Result<Option<Vec<u8>>> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&frame).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("redis: {what}"));
        match self.line.as_bytes().first() {
            Some(b'+') | Some(b':') => Ok(None),
            Some(b'-') => Err(invalid(self.line.trim_end())),
            Some(b'$') => {
                let len: i64 = self.line[1..].trim_end().parse().map_err(|_| invalid("bad bulk length"))?;
                if len < 0 {
                    return Ok(None);
                }
                let mut value = vec![0u8; len as usize + 2];
                self.stream.read_exact(&mut value).await?;
                value.truncate(len as usize);
                Ok(Some(value))
            }
            _ => Err(invalid("unexpected reply")),
        }
    }
}
