/// The wait before the next reconnection attempt: exponential from a minimum to a maximum, with jitter.
///
/// Attempt 0 waits about the minimum, each later attempt twice as long as the one before, up to the
/// maximum. The actual wait is drawn uniformly between half and all of that nominal value ("equal
/// jitter"): never zero, and replicas that lost Redis together do not come back in step.
struct ReconnectBackoff: Sendable {
    var minimum: Duration
    var maximum: Duration

    func nominalDelay(attempt: Int) -> Duration {
        var delay = minimum
        var step = 0
        while step < attempt, delay < maximum {
            delay *= 2
            step += 1
        }
        return min(delay, maximum)
    }

    func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let nominal = nominalDelay(attempt: attempt)
        let fraction = Double.random(in: 0.5...1.0, using: &generator)
        return nominal * fraction
    }

    func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &generator)
    }
}
