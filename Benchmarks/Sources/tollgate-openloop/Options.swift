/// What one open-loop run is asked to do, read from the command line.
struct Options: Sendable {
    var host = "127.0.0.1"
    var port = 80
    var path = "/"
    var method = "GET"
    var headers: [(String, String)] = []
    var body = ""
    /// Requests per second, over all connections together.
    var rate = 1000.0
    var seconds = 10.0
    var warmupSeconds = 1.0
    var connections = 64
    var threads = 1
    var histogramFile: String?
    var requestsFile: String?

    static let usage = """
        usage: tollgate-openloop --url http://HOST:PORT/PATH --rate N [--seconds S] [--warmup S]
                                 [--connections C] [--threads T] [--method M] [--header 'Name: value']...
                                 [--body TEXT] [--histogram FILE.hgrm] [--requests FILE.csv]

        Sends requests at a fixed rate (open loop): request k of a connection is due at start + k x C / N,
        whether or not the previous answer has arrived, and its latency counts from that due time. A
        connection still busy when a request falls due sends it the moment it is free: the wait is part of
        the latency, so a stall shows in the percentiles instead of slowing the client down.
        Prints one JSON object; --histogram writes the latency distribution (HdrHistogram percentile
        format, milliseconds); --requests writes one line per measured request: due time (µs from the start
        of the measured period), latency (µs), HTTP status (0: no answer).
        """

    /// Parses `arguments` (without the program name); a bad or missing value is an error that says which.
    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var sawURL = false
        var index = 0
        func value(_ flag: String) throws(UsageError) -> String {
            index += 1
            guard index < arguments.count else { throw UsageError("\(flag) needs a value") }
            return arguments[index]
        }
        func number(_ flag: String, atLeast minimum: Double) throws(UsageError) -> Double {
            let text = try value(flag)
            guard let number = Double(text), number.isFinite, number >= minimum else {
                throw UsageError("\(flag) expects a number >= \(minimum), got '\(text)'")
            }
            return number
        }
        while index < arguments.count {
            let flag = arguments[index]
            switch flag {
            case "--url":
                let url = try value(flag)
                try options.setURL(url)
                sawURL = true
            case "--rate": options.rate = try number(flag, atLeast: 1)
            case "--seconds": options.seconds = try number(flag, atLeast: 0.1)
            case "--warmup": options.warmupSeconds = try number(flag, atLeast: 0)
            case "--connections": options.connections = try Int(number(flag, atLeast: 1))
            case "--threads": options.threads = try Int(number(flag, atLeast: 1))
            case "--method": options.method = try value(flag)
            case "--body": options.body = try value(flag)
            case "--histogram": options.histogramFile = try value(flag)
            case "--requests": options.requestsFile = try value(flag)
            case "--header":
                let header = try value(flag)
                guard let colon = header.firstIndex(of: ":"), colon != header.startIndex else {
                    throw UsageError("--header expects 'Name: value', got '\(header)'")
                }
                let name = String(header[..<colon])
                let headerValue = header[header.index(after: colon)...].drop { $0 == " " }
                options.headers.append((name, String(headerValue)))
            case "--help", "-h": throw UsageError(nil)
            default: throw UsageError("unknown argument '\(flag)'")
            }
            index += 1
        }
        guard sawURL else { throw UsageError("--url is required") }
        return options
    }

    private mutating func setURL(_ url: String) throws(UsageError) {
        let prefix = "http://"
        guard url.hasPrefix(prefix) else { throw UsageError("--url must start with http://, got '\(url)'") }
        let rest = url.dropFirst(prefix.count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
                throw UsageError("--url has a bad port: '\(url)'")
            }
            self.port = port
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw UsageError("--url has no host: '\(url)'") }
    }
}

/// A command-line mistake; `nil` asks for the usage text alone.
struct UsageError: Error {
    let message: String?
    init(_ message: String?) { self.message = message }
}
