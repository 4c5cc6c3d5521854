//! The HTTP trigger's imports: `http_request` (what the call asked: method, path, query,
//! allow-listed headers, as JSON) and `http_response` (the status and headers of the answer;
//! the body is `respond`'s). Additions to ABI version 1.

use kiri_abi::{code, import, IMPORT_MODULE};
use wasmi::{Caller, Error, Linker};

use super::{answer, deadline, memory, range, HostState};

/// Headers a function may not set: HTTP's own framing and connection handling, and cookies.
const RESERVED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
    "set-cookie",
];

/// Most headers one answer may carry.
const MAX_HEADERS: usize = 32;

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), Error> {
    linker.func_wrap(
        IMPORT_MODULE,
        import::HTTP_REQUEST,
        |mut caller: Caller<'_, HostState>, op: i32, oc: i32| -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let out = range(op, oc, data.len())?;
            Ok(match &state.http {
                Some(request) => answer(data, out, request.json()),
                None => code::NOT_FOUND,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::HTTP_RESPONSE,
        |mut caller: Caller<'_, HostState>, status: i32, hp: i32, hl: i32| -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let headers = range(hp, hl, data.len())?;
            if headers.len() > 16 << 10 {
                return Ok(code::TOO_LARGE);
            }
            match response(status, &data[headers]) {
                Ok((status, headers)) => {
                    state.response.status = Some(status);
                    state.response.headers = headers;
                    Ok(code::OK)
                }
                Err(()) => Ok(code::INVALID),
            }
        },
    )?;
    Ok(())
}

/// A status of 200 to 599 and headers as a JSON object of text values (or nothing), with
/// valid names and values, none of them [`RESERVED`].
#[allow(clippy::type_complexity)]
fn response(status: i32, headers: &[u8]) -> Result<(u16, Vec<(String, String)>), ()> {
    let status = u16::try_from(status).map_err(|_| ())?;
    if !(200..=599).contains(&status) {
        return Err(());
    }
    if headers.is_empty() {
        return Ok((status, Vec::new()));
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(headers).map_err(|_| ())?;
    if object.len() > MAX_HEADERS {
        return Err(());
    }
    let mut out = Vec::with_capacity(object.len());
    for (name, value) in object {
        let name = name.to_ascii_lowercase();
        let serde_json::Value::String(value) = value else {
            return Err(());
        };
        let valid = axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && axum::http::HeaderValue::from_str(&value).is_ok();
        if !valid || RESERVED.contains(&name.as_str()) {
            return Err(());
        }
        out.push((name, value));
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::response;

    #[test]
    fn statuses_and_headers_are_checked() {
        assert_eq!(response(201, b""), Ok((201, vec![])));
        assert_eq!(
            response(200, br#"{"Content-Type":"application/json","x-a":"1"}"#),
            Ok((
                200,
                vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-a".into(), "1".into())
                ]
            ))
        );
        for bad in [
            (99, &b""[..]),
            (600, b""),
            (200, b"[1]"),
            (200, br#"{"x":1}"#),
            (200, br#"{"bad name":"v"}"#),
            (200, br#"{"x":"line\nbreak"}"#),
            (200, br#"{"content-length":"5"}"#),
            (200, br#"{"Set-Cookie":"a=b"}"#),
        ] {
            assert!(response(bad.0, bad.1).is_err(), "{bad:?}");
        }
    }
}
