// An open-loop HTTP load generator: a fixed request rate, each latency measured from the moment its request
// fell due. See `Options.usage`.
import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix

/// What one connection measured, handed back from its event loop.
struct ConnectionResult: Sendable {
    let histogram: Histogram<UInt64>
    let outcomes: Outcomes
    let log: [Log]

    /// One measured request: due time (µs from the measured start), latency (µs), status (0: no answer).
    struct Log: Sendable { let due: UInt64, latency: UInt64, status: Int }
}

/// The run's summary, printed as JSON; latencies in milliseconds.
struct Summary: Encodable {
    let targetRate: Double
    let achievedRate: Double
    let seconds: Double
    let connections: Int
    let requests: UInt64
    let outcomes: Outcomes
    /// When the measured period started, in seconds since 1970.
    let startEpoch: Double
    let p50Ms: Double, p90Ms: Double, p99Ms: Double, p999Ms: Double, maxMs: Double
    /// (percentile 0-100, latency ms) along the distribution, for percentile curves.
    let percentiles: [[Double]]

    enum CodingKeys: String, CodingKey {
        case targetRate = "target_rate", achievedRate = "achieved_rate", seconds, connections, requests, outcomes
        case startEpoch = "start_epoch", p50Ms = "p50_ms", p90Ms = "p90_ms", p99Ms = "p99_ms", p999Ms = "p99_9_ms"
        case maxMs = "max_ms", percentiles
    }
}

func makeRequest(_ options: Options) -> RequestTemplate {
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: "\(options.host):\(options.port)")
    for (name, value) in options.headers { headers.add(name: name, value: value) }
    if !options.body.isEmpty || options.method == "POST" || options.method == "PUT" {
        headers.add(name: "Content-Length", value: String(options.body.utf8.count))
    }
    return RequestTemplate(
        head: HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: options.method), uri: options.path, headers: headers),
        body: ByteBuffer(string: options.body)
    )
}

/// Runs the load and returns what each connection measured, with the measured period's start (epoch seconds).
func runLoad(_ options: Options) throws -> (results: [ConnectionResult], startEpoch: Double) {
    let template = makeRequest(options)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
    defer { try? group.syncShutdownGracefully() }
    let now = Int64(NIODeadline.now().uptimeNanoseconds)
    // The first requests fall due once the connections have had a moment to open.
    let origin = now + 200_000_000
    let measureStart = origin + Int64(options.warmupSeconds * 1e9)
    let measureEnd = measureStart + Int64(options.seconds * 1e9)
    let drainEnd = measureEnd + 2_000_000_000
    let startEpoch = Date().timeIntervalSince1970 + Double(measureStart - now) / 1e9

    var futures: [EventLoopFuture<ConnectionResult>] = []
    for connection in 0..<options.connections {
        let eventLoop = group.next()
        let schedule = Schedule(connection: connection, connections: options.connections, rate: options.rate, origin: origin)
        let future = eventLoop.submit {
            let driver = ConnectionDriver(eventLoop: eventLoop, options: options, request: template, schedule: schedule,
                                          measureStart: measureStart, measureEnd: measureEnd, drainEnd: drainEnd)
            driver.start()
            let bound = NIOLoopBound(driver, eventLoop: eventLoop)
            return driver.finishedFuture.map {
                let driver = bound.value
                return ConnectionResult(histogram: driver.histogram, outcomes: driver.outcomes,
                                        log: driver.log.map { ConnectionResult.Log(due: $0.0, latency: $0.1, status: $0.2) })
            }
        }.flatMap { $0 }
        futures.append(future)
    }
    let results = try EventLoopFuture.whenAllSucceed(futures, on: group.next()).wait()
    return (results, startEpoch)
}

func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }

func write(_ text: String, to file: String) {
    do {
        try text.write(toFile: file, atomically: true, encoding: .utf8)
    } catch {
        FileHandle.standardError.write(Data("tollgate-openloop: cannot write \(file): \(error)\n".utf8))
        exit(1)
    }
}

func main() -> Int32 {
    let options: Options
    do throws(UsageError) {
        options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    } catch {
        if let message = error.message { FileHandle.standardError.write(Data("tollgate-openloop: \(message)\n".utf8)) }
        FileHandle.standardError.write(Data((Options.usage + "\n").utf8))
        return error.message == nil ? 0 : 2
    }
    let run: (results: [ConnectionResult], startEpoch: Double)
    do {
        run = try runLoad(options)
    } catch {
        FileHandle.standardError.write(Data("tollgate-openloop: \(error)\n".utf8))
        return 1
    }
    var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var outcomes = Outcomes()
    for result in run.results {
        histogram.add(result.histogram)
        outcomes.add(result.outcomes)
    }
    if let file = options.histogramFile {
        var text = ""
        histogram.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1000)
        write(text, to: file)
    }
    if let file = options.requestsFile {
        var text = "due_us,latency_us,status\n"
        for line in run.results.flatMap(\.log).sorted(by: { $0.due < $1.due }) {
            text += "\(line.due),\(line.latency),\(line.status)\n"
        }
        write(text, to: file)
    }
    var curve: [[Double]] = []
    for step in histogram.percentiles(ticksPerHalfDistance: 5) {
        curve.append([step.percentileLevelIteratedTo, milliseconds(step.value)])
    }
    let summary = Summary(
        targetRate: options.rate, achievedRate: Double(outcomes.answered) / options.seconds, seconds: options.seconds,
        connections: options.connections, requests: histogram.totalCount, outcomes: outcomes, startEpoch: run.startEpoch,
        p50Ms: milliseconds(histogram.valueAtPercentile(50)), p90Ms: milliseconds(histogram.valueAtPercentile(90)),
        p99Ms: milliseconds(histogram.valueAtPercentile(99)), p999Ms: milliseconds(histogram.valueAtPercentile(99.9)),
        maxMs: milliseconds(histogram.max), percentiles: curve
    )
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do {
        print(String(decoding: try encoder.encode(summary), as: UTF8.self))
    } catch {
        FileHandle.standardError.write(Data("tollgate-openloop: \(error)\n".utf8))
        return 1
    }
    return 0
}

exit(main())
