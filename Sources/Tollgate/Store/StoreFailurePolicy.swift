/// What answers when a shared store (Redis) cannot answer in time: one type for the configuration's
/// `store.failure_policy` and the Redis store that applies it.
public enum StoreFailurePolicy: String, Sendable, CaseIterable {
    /// Refuse: the caller answers 503 with `Retry-After`.
    case deny
    /// Let the request through unchecked.
    case allow
    /// Decide in process with the same plans until the store is back.
    case local
}
