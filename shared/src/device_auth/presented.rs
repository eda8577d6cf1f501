//! What a device request presents (HTTP headers and query, or CoAP's option 4209 and
//! URI query), read as Drogue Cloud's HTTP and CoAP endpoints read it:
//!
//! | request | Basic user | credential |
//! |---|---|---|
//! | no `application`, no `device` | `device@app` | the device's password |
//! | `?application=` | `device` | the device's password |
//! | `?application=&device=` | `username` | a username and password for `device` |
//! | `?device=` | `username@app` | a username and password for `device` |
//! | no `Authorization` | | the client certificate (`?application=` may name its application) |
//!
//! The `Authorization` value is the HTTP header, or the value of CoAP option 4209.
//!
//! Anything else (a certificate and a password, a bearer token, a malformed header) is
//! a failed authentication. The device part of `device@app` may be percent-encoded; the
//! application is after the last `@`.

use super::{DeviceAuthRequest, DeviceCredential};
use crate::http::basic_credentials;
use percent_encoding::percent_decode_str;

/// The query parameters that take part.
#[derive(Debug, Default)]
pub struct Names {
    pub application: Option<String>,
    pub device: Option<String>,
    pub r#as: Option<String>,
}

/// The authentication request, or `None` when the combination is not one of the table.
pub fn request(
    names: Names,
    authorization: Option<&str>,
    chain: Option<Vec<Vec<u8>>>,
) -> Option<DeviceAuthRequest> {
    let Names {
        application,
        device,
        r#as,
    } = names;
    let basic = match authorization {
        Some(value) => Some(basic_credentials(value)?),
        None => None,
    };
    let (application, credential) = match (application, device, basic, chain) {
        (None, None, Some((user, password)), None) => {
            let (device, app) = scoped(&user)?;
            (Some(app), DeviceCredential::Password { device, password })
        }
        (Some(app), None, Some((device, password)), None) => {
            (Some(app), DeviceCredential::Password { device, password })
        }
        (Some(app), Some(device), Some((username, password)), None) => (
            Some(app),
            DeviceCredential::UsernamePassword {
                username,
                password,
                device: Some(device),
            },
        ),
        (None, Some(device), Some((user, password)), None) => {
            let (username, app) = scoped(&user)?;
            (
                Some(app),
                DeviceCredential::UsernamePassword {
                    username,
                    password,
                    device: Some(device),
                },
            )
        }
        (application, None, None, Some(chain)) => {
            (application, DeviceCredential::Certificate { chain })
        }
        _ => return None,
    };
    Some(DeviceAuthRequest {
        application,
        credential,
        r#as,
    })
}

/// `name@app`: the (percent-decoded) name and the application.
fn scoped(user: &str) -> Option<(String, String)> {
    let (name, app) = user.rsplit_once('@')?;
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    (!name.is_empty() && !app.is_empty()).then(|| (name, app.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn auth(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    fn names(application: Option<&str>, device: Option<&str>) -> Names {
        Names {
            application: application.map(Into::into),
            device: device.map(Into::into),
            r#as: None,
        }
    }

    #[test]
    fn every_form_of_the_table_is_read() {
        let r = request(names(None, None), Some(&auth("dev%201@app", "pw")), None).unwrap();
        assert_eq!(r.application.as_deref(), Some("app"));
        assert!(
            matches!(r.credential, DeviceCredential::Password { ref device, .. } if device == "dev 1")
        );

        let r = request(names(Some("app"), None), Some(&auth("dev", "pw")), None).unwrap();
        assert!(
            matches!(r.credential, DeviceCredential::Password { ref device, .. } if device == "dev")
        );

        let r = request(
            names(Some("app"), Some("dev")),
            Some(&auth("user", "pw")),
            None,
        )
        .unwrap();
        assert!(
            matches!(r.credential, DeviceCredential::UsernamePassword { ref username, ref device, .. }
            if username == "user" && device.as_deref() == Some("dev"))
        );

        let r = request(
            names(None, Some("dev")),
            Some(&auth("user@app", "pw")),
            None,
        )
        .unwrap();
        assert_eq!(r.application.as_deref(), Some("app"));
        assert!(
            matches!(r.credential, DeviceCredential::UsernamePassword { ref username, .. } if username == "user")
        );

        let r = request(names(Some("app"), None), None, Some(vec![vec![1]])).unwrap();
        assert!(matches!(r.credential, DeviceCredential::Certificate { .. }));
    }

    #[test]
    fn other_combinations_fail() {
        for (n, a, chain) in [
            (names(None, None), Some(auth("no-app", "pw")), None),
            (names(None, None), None, None),
            (names(None, None), Some("Bearer abc".to_owned()), None),
            (names(None, None), Some("Basic !!!".to_owned()), None),
            (
                names(None, None),
                Some(auth("dev@app", "pw")),
                Some(vec![vec![1]]),
            ),
            (names(None, Some("dev")), None, Some(vec![vec![1]])),
        ] {
            assert!(request(n, a.as_deref(), chain).is_none());
        }
    }
}
