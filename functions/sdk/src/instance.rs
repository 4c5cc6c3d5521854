//! Values kept for the life of a function's instance.

/// A value computed on first use and kept for the life of the function's instance: what a
/// function reads from its configuration, parsed once instead of on every event. An instance
/// runs its events one at a time and keeps its memory between them; a new configuration or
/// module version gets new instances, so a kept value is never stale.
///
/// ```ignore
/// static LIMIT: kiri_sdk::PerInstance<Option<f64>> =
///     kiri_sdk::PerInstance::new(|| kiri_sdk::config_parse("limit"));
///
/// fn on_event(event: &Event) -> Result<(), Error> {
///     let Some(limit) = *LIMIT.get() else { return Err(NO_LIMIT) };
///     // ...
/// }
/// ```
///
/// `init` must not call `get` on the same value. Built natively (unit tests against
/// [`crate::mock`]) nothing is kept: `get` computes the value each time, so a test that changes
/// the mock's configuration sees the change.
pub struct PerInstance<T: 'static> {
    init: fn() -> T,
    #[cfg(target_arch = "wasm32")]
    value: core::cell::UnsafeCell<Option<T>>,
}

// SAFETY: on wasm32 without the `atomics` feature there is one thread, and Kiri runs one call
// at a time on an instance; natively nothing but the `fn` pointer is stored.
#[cfg(not(target_feature = "atomics"))]
unsafe impl<T> Sync for PerInstance<T> {}

impl<T> PerInstance<T> {
    /// A value that `init` computes on the first [`PerInstance::get`].
    pub const fn new(init: fn() -> T) -> PerInstance<T> {
        PerInstance {
            init,
            #[cfg(target_arch = "wasm32")]
            value: core::cell::UnsafeCell::new(None),
        }
    }

    /// The value, computed on the first call.
    #[cfg(target_arch = "wasm32")]
    pub fn get(&self) -> &T {
        let slot = self.value.get();
        // SAFETY: one thread and no re-entrance (see above): nothing else reads or writes the
        // slot meanwhile. It is written once, while empty, so no reference handed out before
        // is ever invalidated.
        unsafe {
            if (*slot).is_none() {
                let value = (self.init)();
                if (*slot).is_none() {
                    slot.write(Some(value));
                }
            }
            match &*slot {
                Some(v) => v,
                None => core::hint::unreachable_unchecked(),
            }
        }
    }

    /// The value, computed on every call (nothing is kept natively).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn get(&self) -> &T {
        std::boxed::Box::leak(std::boxed::Box::new((self.init)()))
    }
}
