/// When each request of one connection falls due, in nanoseconds from a common origin: the connections
/// share the total rate equally and are staggered so that their requests interleave evenly.
struct Schedule: Sendable, Equatable {
    /// Due time of the connection's first request.
    let firstDue: Int64
    /// Time between two requests of the connection.
    let interval: Int64

    init(connection: Int, connections: Int, rate: Double, origin: Int64 = 0) {
        let gap = 1e9 / rate
        interval = Int64((gap * Double(connections)).rounded())
        firstDue = origin + Int64((gap * Double(connection)).rounded())
    }

    /// The due time of request `index` (0 is the first).
    func due(_ index: Int) -> Int64 { firstDue + Int64(index) * interval }

    /// How many requests fall due before `end` (exclusive).
    func count(before end: Int64) -> Int {
        end <= firstDue ? 0 : Int((end - firstDue - 1) / interval) + 1
    }
}

/// Counts of one run's answers, by outcome.
struct Outcomes: Sendable, Codable, Equatable {
    var byStatus: [String: Int] = [:]
    /// Requests that got no answer: the connection failed or closed under them, or the run ended first.
    var unanswered = 0
    /// Connection attempts that failed (each is retried after a short pause).
    var connectFailures = 0

    mutating func add(_ other: Outcomes) {
        byStatus.merge(other.byStatus, uniquingKeysWith: +)
        unanswered += other.unanswered
        connectFailures += other.connectFailures
    }

    var answered: Int { byStatus.values.reduce(0, +) }
}
