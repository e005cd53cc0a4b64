import Testing

@testable import TollgateSidecar

/// `Date` values as the proxy writes them on its own answers and on upstream answers without one.
@Suite struct HTTPDateTests {
    @Test func datesAreIMFFixdate() {
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        // The example of RFC 9110 §5.6.7.
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(HTTPDate.now().hasSuffix(" GMT") && HTTPDate.now().count == 29)
    }
}
