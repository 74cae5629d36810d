@testable import Stats
import XCTest

final class NumberTextTests: XCTestCase {
    func testFixedMatchesPrintfRounding() {
        XCTAssertEqual(NumberText.fixed(0, digits: 1), "0.0")
        XCTAssertEqual(NumberText.fixed(12.345, digits: 2), "12.35")
        XCTAssertEqual(NumberText.fixed(0.05, digits: 2), "0.05")
        XCTAssertEqual(NumberText.fixed(99.96, digits: 1), "100.0")
        XCTAssertEqual(NumberText.fixed(-3.25, digits: 1), "-3.3")
        XCTAssertEqual(NumberText.fixed(-0.01, digits: 1), "0.0")
        XCTAssertEqual(NumberText.fixed(7.6, digits: 0), "8")
        XCTAssertEqual(NumberText.fixed(1234567.891, digits: 2), "1234567.89")
    }

    func testFixedNeverTrapsOnExtremes() {
        XCTAssertEqual(NumberText.fixed(.nan, digits: 1), "nan")
        XCTAssertEqual(NumberText.fixed(.infinity, digits: 1), "inf")
        XCTAssertEqual(NumberText.fixed(-.infinity, digits: 2), "-inf")
        XCTAssertEqual(NumberText.fixed(1e300, digits: 2), "inf")
        XCTAssertEqual(NumberText.fixed(.greatestFiniteMagnitude, digits: 6), "inf")
        XCTAssertEqual(NumberText.fixed(1.5, digits: 99), "1.500000")
    }

    func testPadded() {
        XCTAssertEqual(NumberText.padded(7, width: 2), "07")
        XCTAssertEqual(NumberText.padded(59, width: 2), "59")
        XCTAssertEqual(NumberText.padded(123, width: 2), "123")
    }
}
