// CSV tables (RFC 4180: comma-separated, fields optionally in double quotes with "" for a quote,
// CRLF or LF line ends), gzipped or not, read row by row without keeping the fields of the whole
// file. A first row with a field that is not a number (and not empty) is the header. Every row
// must have as many fields as the first: a ragged row is an error naming the file and its line.
//
//   CsvReader csv("data.csv");
//   int label = csv.Column("label", "--label-column");     // by name, or a 0-based index
//   csv.ForEach([&](const CsvRow& row) { double v = row.Number(3); ... });
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace bptt::formats {

class CsvReader;

// One row while it is read: its fields, its line in the file (1-based) for messages.
struct CsvRow {
  const CsvReader* csv;
  int64_t line;
  std::vector<std::string_view> fields;

  bool Empty(int column) const { return fields[static_cast<size_t>(column)].empty(); }
  // Field `column` as a finite number; throws naming the file, line and column ("data.csv:
  // line 12, column 'x3': 'abc' is not a number").
  double Number(int column) const;
};

class CsvReader {
 public:
  // Reads the file's bytes; throws naming it when it cannot be read or holds no row.
  explicit CsvReader(const std::filesystem::path& path);

  const std::string& source() const { return source_; }
  const std::vector<std::string>& header() const { return header_; }  // empty without a header
  int columns() const { return columns_; }
  // A column by its header name or its 0-based index ("3"); "last" and "first" name the last and
  // the first. Throws naming `flag` when the table has no such column.
  int Column(const std::string& name, const std::string& flag) const;
  // The column's name for messages: its header name, or its index.
  std::string ColumnName(int column) const;

  // Calls f for every row after the header, in order.
  void ForEach(const std::function<void(const CsvRow&)>& f) const;

 private:
  // Splits the row that starts at `at` into fields (unquoting them into `scratch`); returns the
  // offset after it, and its line count.
  size_t NextRow(size_t at, std::vector<std::string_view>& fields, std::deque<std::string>& scratch,
                 int64_t& lines) const;

  std::string source_;
  std::string text_;
  std::vector<std::string> header_;
  size_t body_ = 0;         // offset of the first row after the header
  int64_t body_line_ = 1;   // its line
  int columns_ = 0;
};

}  // namespace bptt::formats
