/// The counter state of one limit for one subject. All zeros is an untouched limit.
///
/// - token bucket: `a` = deficit below a full bucket in rate units, `b` = instant of the last update
/// - sliding log: `a` = cost inside the window (entries are in a `SlidingLogEntries`)
/// - sliding counter: `a` = start of the current window, `b` = previous window's count, `c` = current count
/// - fixed window and calendar: `a` = window start, `b` = count, `c` = window end
struct LimitState: Sendable, Equatable {
    var a: Int64 = 0
    var b: Int64 = 0
    var c: Int64 = 0

    init() {}

    init(a: Int64, b: Int64, c: Int64) {
        self.a = a
        self.b = b
        self.c = c
    }
}

/// What one limit says about one request, before anything is committed.
struct Evaluation: Sendable {
    var admits: Bool
    var exceedsCapacity: Bool
    /// Quota left after this request if it is admitted, otherwise quota left now.
    var remaining: Int64
    /// Microseconds until more quota is available than `remaining`; 0 when the limit is untouched.
    var resetAfter: Int64
    /// Microseconds until this request would be admitted: 0 when it is admitted now, -1 never.
    var retryAfter: Int64
    /// The length of the window the limit is counting in (for `w`).
    var window: Int64
    /// When the committed state is indistinguishable from an untouched limit.
    var expiresAt: Int64
    /// The state to store if the request is admitted.
    var next: LimitState
}
