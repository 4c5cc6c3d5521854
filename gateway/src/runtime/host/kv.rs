//! The key-value host functions: `kv_get`, `kv_put`, `kv_delete`, `kv_list`.

use kiri_abi::{code, import, IMPORT_MODULE};
use wasmi::{Caller, Error, Linker};

use super::{answer, deadline, lookup, memory, range, HostState, MAX_KEY_BYTES, MAX_LIST_KEYS};

/// Registers the key-value host functions: a namespace per function, reads see the
/// invocation's own writes, writes are applied only when the invocation succeeds.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), Error> {
    linker.func_wrap(
        IMPORT_MODULE,
        import::KV_GET,
        |mut caller: Caller<'_, HostState>, kp: i32, kl: i32, op: i32, oc: i32| {
            lookup(
                &mut caller,
                [kp, kl, op, oc],
                code::INVALID,
                |state, key| {
                    if !state.caller_grants(key, "kv") {
                        return Ok(Err(code::DENIED));
                    }
                    Ok(state.kv_read(key)?.ok_or(code::NOT_FOUND))
                },
            )
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::KV_PUT,
        |mut caller: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let key = range(kp, kl, data.len())?;
            let value = range(vp, vl, data.len())?;
            // kv_write checks the key and value sizes before it copies anything.
            state.kv_write(&data[key], Some(&data[value]))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::KV_DELETE,
        |mut caller: Caller<'_, HostState>, kp: i32, kl: i32| -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let key = range(kp, kl, data.len())?;
            state.kv_write(&data[key], None)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::KV_LIST,
        |mut caller: Caller<'_, HostState>,
         pp: i32,
         pl: i32,
         op: i32,
         oc: i32|
         -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let prefix = range(pp, pl, data.len())?;
            let out = range(op, oc, data.len())?;
            if prefix.len() > MAX_KEY_BYTES {
                return Ok(code::INVALID);
            }
            let prefix = data[prefix].to_vec();
            if !state.caller_grants(&prefix, "kv") {
                return Ok(code::DENIED);
            }
            // Stored keys, overlaid with this invocation's writes, in key order.
            let mut keys = std::collections::BTreeSet::new();
            for entry in state.kv.scan_prefix(&prefix).keys() {
                let k = entry.map_err(|e| Error::new(format!("kv store: {e}")))?;
                keys.insert(k.to_vec());
                if keys.len() > MAX_LIST_KEYS + state.kv_writes.len() {
                    break;
                }
            }
            for (k, v) in state.kv_writes.range(prefix.clone()..) {
                if !k.starts_with(&prefix) {
                    break;
                }
                if v.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
            // Encoding: each key as a 2-byte big-endian length and the key bytes.
            let mut encoded = Vec::new();
            for k in keys.iter().take(MAX_LIST_KEYS) {
                encoded.extend_from_slice(&(k.len() as u16).to_be_bytes());
                encoded.extend_from_slice(k);
            }
            Ok(answer(data, out, &encoded))
        },
    )?;
    Ok(())
}
