//! libcoap's command-line clients (Debian package `libcoap3-bin`, which the test command
//! installs): `coap-client-notls` for plain CoAP, `coap-client-openssl` for CoAP over
//! DTLS. A missing client fails the test that needs it, with what to install.

use base64::Engine;

/// The plain CoAP client.
pub const PLAIN: &str = "coap-client-notls";
/// The client built with OpenSSL's DTLS (PSK and X.509).
pub const DTLS: &str = "coap-client-openssl";

/// The last response a client printed with `-v 7`.
#[derive(Debug, Clone)]
pub struct Response {
    /// `2.04`, `4.03`, ...
    pub code: String,
    /// The message type: `ACK`, `CON`, `NON`.
    pub kind: String,
    /// The whole line the client printed for it.
    pub line: String,
}

/// What a client run printed.
#[derive(Debug)]
pub struct Answer {
    /// The last response, if any came.
    pub response: Option<Response>,
    /// Everything the client printed (its messages and its log).
    pub output: String,
}

impl Answer {
    /// The code of the last response, if any came.
    pub fn code(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.code.as_str())
    }
}

/// Runs `client` (`-v 7` prints every message and its log; `-B` gives up after `wait`
/// seconds) with these arguments.
pub async fn run(client: &str, wait: u32, args: &[&str]) -> Answer {
    let output = tokio::process::Command::new(client)
        .args(["-v", "7", "-B", &wait.to_string()])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{client} cannot be run ({e}): the CoAP tests need libcoap's clients \
                 (Debian/Ubuntu: apt-get install libcoap3-bin)"
            )
        });
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Answer {
        response: last_response(&output),
        output,
    }
}

/// The last message line whose code is a response's (2.xx to 5.xx), not a request's or
/// an empty message's (0.00).
fn last_response(output: &str) -> Option<Response> {
    let line = output.lines().rfind(|l| {
        l.starts_with("v:1 t:")
            && l.split_whitespace()
                .nth(2)
                .and_then(|c| c.strip_prefix("c:"))
                .and_then(|c| c.as_bytes().first())
                .is_some_and(|b| (b'2'..=b'5').contains(b))
    })?;
    let mut words = line.split_whitespace().skip(1);
    let kind = words.next()?.trim_start_matches("t:").to_owned();
    let code = words.next()?.trim_start_matches("c:").to_owned();
    Some(Response {
        code,
        kind,
        line: line.to_owned(),
    })
}

/// Option 4209 (Drogue's credentials option) with `Basic base64(user:password)`, as `-O`
/// takes it.
pub fn basic_option(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("4209,Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_response_is_found_among_requests_and_empty_messages() {
        let output = "v:1 t:CON c:POST i:1 {01} [ Uri-Path:v1 ]\n\
                      v:1 t:ACK c:0.00 i:1 {} [ ]\n\
                      Jan 01 coap_io: something\n\
                      v:1 t:CON c:2.05 i:7 {01} [ 4210:\\x73 ] :: 'x'\n\
                      v:1 t:ACK c:0.00 i:7 {} [ ]\n";
        let response = last_response(output).unwrap();
        assert_eq!(response.code, "2.05");
        assert_eq!(response.kind, "CON");
        assert!(response.line.contains("4210"));
        assert!(last_response("v:1 t:CON c:POST i:1 {01} [ ]\n").is_none());
    }

    #[test]
    fn credentials_go_in_option_4209() {
        assert_eq!(basic_option("d@a", "p"), "4209,Basic ZEBhOnA=");
    }
}
