import HTTPTypes
import Hummingbird
import Tollgate

/// An error answer as `application/problem+json` (RFC 9457): the sidecar's and the middleware's own
/// refusals (400, 401, 403, 404, 413, 429, 431, 500, 502, 503, 504).
///
/// Bodies are small, built by hand in a fixed member order (`type`, `title`, `status`, `detail`, then
/// extension members), and never contain an API key. Every problem response carries
/// `Cache-Control: no-store`: a refusal is about this request at this instant.
public struct Problem: Sendable {
    /// A JSON value of an extension member.
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        case strings([String])
    }

    public var status: HTTPResponse.Status
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    public var type: String
    public var title: String
    public var detail: String?
    /// Extension members, in order.
    public var members: [(name: String, value: Value)]
    /// Extra header fields (`WWW-Authenticate`, `Retry-After`, RateLimit fields…).
    public var headers: HTTPFields

    public init(
        status: HTTPResponse.Status, type: String = "about:blank", title: String? = nil, detail: String? = nil,
        members: [(name: String, value: Value)] = [], headers: HTTPFields = [:]
    ) {
        self.status = status
        self.type = type
        self.title = title ?? status.reasonPhrase
        self.detail = detail
        self.members = members
        self.headers = headers
    }

    public static let contentType = "application/problem+json"

    /// The JSON body.
    public var json: String {
        var out = "{\"type\":" + Self.quoted(type) + ",\"title\":" + Self.quoted(title) + ",\"status\":\(status.code)"
        if let detail { out += ",\"detail\":" + Self.quoted(detail) }
        for (name, value) in members {
            out += "," + Self.quoted(name) + ":"
            switch value {
            case .string(let text): out += Self.quoted(text)
            case .integer(let number): out += String(number)
            case .strings(let list): out += "[" + list.map(Self.quoted).joined(separator: ",") + "]"
            }
        }
        return out + "}"
    }

    /// The whole response: status, headers, body.
    public func response() -> Response {
        let (head, body) = responseParts()
        return Response(status: head.status, headers: head.headerFields, body: ResponseBody(byteBuffer: body))
    }

    /// The response's head (with its `Content-Type`, `Cache-Control` and `Content-Length`) and body.
    public func responseParts() -> (head: HTTPResponse, body: ByteBuffer) {
        var fields = headers
        fields[.contentType] = Self.contentType
        fields[.cacheControl] = "no-store"
        let body = ByteBuffer(string: json)
        fields[.contentLength] = String(body.readableBytes)
        return (HTTPResponse(status: status, headerFields: fields), body)
    }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

// MARK: The problems Tollgate answers with

extension Problem {
    /// The realm in `WWW-Authenticate` challenges.
    public static let realm = "tollgate"

    /// The IANA-registered problem type of a refusal by quota (draft-ietf-httpapi-ratelimit-headers).
    public static let quotaExceededType = "https://iana.org/assignments/http-problem-types#quota-exceeded"

    /// 401 for a request without credentials: a bare challenge (RFC 6750 §3.1: no error code).
    public static func missingKey() -> Problem {
        Problem(
            status: .unauthorized,
            detail: "send an API key as Authorization: Bearer <key> or wazzapi-api-key: <key>",
            headers: [.wwwAuthenticate: "Bearer realm=\"\(realm)\""])
    }

    /// 401 for credentials that are not a valid key: malformed, unknown, revoked or expired.
    /// The challenge says `invalid_token`; the description is generic on purpose for unknown and
    /// revoked keys, so that it tells a guesser nothing.
    public static func invalidKey(_ detail: String) -> Problem {
        Problem(
            status: .unauthorized, detail: detail,
            headers: [
                .wwwAuthenticate:
                    "Bearer realm=\"\(realm)\", error=\"invalid_token\", error_description=\"\(challengeText(detail))\""
            ])
    }

    /// 403 for a valid key without the scope the route requires (RFC 6750 `insufficient_scope`).
    public static func insufficientScope(_ scope: String) -> Problem {
        Problem(
            status: .forbidden, title: "Insufficient scope",
            detail: "this API key lacks the scope \(scope), which this endpoint requires",
            members: [("required_scope", .string(scope))],
            headers: [.wwwAuthenticate: "Bearer realm=\"\(realm)\", error=\"insufficient_scope\", scope=\"\(scope)\""])
    }

    /// 403 for a valid key used on another organization's resources.
    public static func otherOrganization() -> Problem {
        Problem(
            status: .forbidden, title: "Wrong organization",
            detail: "this API key belongs to another organization than the one this URL addresses")
    }

    public static func notFound() -> Problem {
        Problem(status: .notFound, detail: "no route of this API matches the method and path")
    }

    public static func badRequest(_ detail: String) -> Problem {
        Problem(status: .badRequest, detail: detail)
    }

    /// 413 for a body larger than `limit` bytes.
    public static func contentTooLarge(limit: Int) -> Problem {
        Problem(
            status: .contentTooLarge, detail: "the request body is larger than \(limit) bytes",
            members: [("max_body_size", .integer(Int64(limit)))])
    }

    /// 431 for a request line and headers larger than `limit` bytes.
    public static func headersTooLarge(limit: Int) -> Problem {
        Problem(
            status: .requestHeaderFieldsTooLarge, detail: "the request's headers are larger than \(limit) bytes")
    }

    public static func badGateway(_ detail: String) -> Problem {
        Problem(status: .badGateway, detail: detail)
    }

    public static func gatewayTimeout(_ detail: String) -> Problem {
        Problem(status: .gatewayTimeout, detail: detail)
    }

    public static func internalError(_ detail: String) -> Problem {
        Problem(status: .internalServerError, detail: detail)
    }

    /// 503 with `Retry-After`: the store or the registry cannot answer.
    public static func unavailable(_ detail: String, retryAfterSeconds: Int64) -> Problem {
        Problem(
            status: .serviceUnavailable, detail: detail,
            members: [("retry_after", .integer(retryAfterSeconds))],
            headers: [.retryAfter: String(retryAfterSeconds)])
    }

    /// 429 for a request refused by its plan: the limits that refused it, when to retry, and the
    /// RateLimit fields of the decision.
    ///
    /// A request that costs more than a limit can ever hold also gets 429 with this type, but without
    /// `Retry-After` or `retry_after` (waiting will not help) and with its `cost`: the client must split it.
    public static func quotaExceeded(_ decision: Decision, plan: Plan, cost: Int, rateLimitFields: HTTPFields) -> Problem {
        let violated = decision.violated.map { plan.limits[$0.index].name }
        var members: [(name: String, value: Value)] = [("violated-policies", .strings(violated))]
        let detail: String
        if decision.denial == .costExceedsCapacity {
            let capacities = decision.violated.filter(\.exceedsCapacity).map {
                "\(plan.limits[$0.index].name) holds at most \($0.quota)"
            }
            detail = "this request costs \(cost), more than the plan allows at once (\(capacities.joined(separator: ", "))); split it"
            members.append(("cost", .integer(Int64(cost))))
        } else {
            let seconds = RateLimitHeaders.retryAfter(decision).flatMap { Int64($0) } ?? 1
            detail = "the \(plan.name) plan's \(violated.joined(separator: ", ")) limit is reached; retry in \(seconds) s"
            members.append(("retry_after", .integer(seconds)))
        }
        return Problem(
            status: .tooManyRequests, type: quotaExceededType,
            title: "Request cannot be satisfied as assigned quota has been exceeded", detail: detail,
            members: members, headers: rateLimitFields)
    }

    /// RFC 6750 `error_description` allows printable ASCII but `"` and `\`.
    static func challengeText(_ text: String) -> String {
        String(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F && $0 != "\"" && $0 != "\\" }.map(Character.init))
    }
}

extension HTTPField.Name {
    static let rateLimitPolicy = HTTPField.Name("RateLimit-Policy")!
    static let rateLimit = HTTPField.Name("RateLimit")!
    static let xRateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let xRateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let xRateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
}
