#include "formats/csv.h"

#include <charconv>
#include <cmath>
#include <deque>

#include "bptt/error.h"
#include "formats/arrays.h"

namespace bptt::formats {

namespace {

bool IsNumber(std::string_view s, double* value = nullptr) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  double v = 0;
  const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (error != std::errc() || end != s.data() + s.size()) return false;
  if (value) *value = v;
  return true;
}

}  // namespace

double CsvRow::Number(int column) const {
  const std::string_view field = fields[static_cast<size_t>(column)];
  double v = 0;
  const std::string where = csv->source() + ": line " + std::to_string(line) + ", column " + csv->ColumnName(column);
  if (!IsNumber(field, &v)) {
    if (field.empty()) throw Error(where + ": the field is empty");
    throw Error(where + ": '" + std::string(field) + "' is not a number");
  }
  if (!std::isfinite(v) || !std::isfinite(static_cast<float>(v)))
    throw Error(where + ": " + (std::isnan(v) ? std::string("NaN") : "'" + std::string(field) + "'") +
                " is not a finite number");
  return v;
}

CsvReader::CsvReader(const std::filesystem::path& path) : source_(path.string()) {
  const std::vector<uint8_t> bytes = ReadFileBytes(path);
  text_.assign(bytes.begin(), bytes.end());
  if (text_.starts_with("\xEF\xBB\xBF")) text_.erase(0, 3);  // a UTF-8 byte-order mark
  std::vector<std::string_view> fields;
  std::deque<std::string> scratch;
  int64_t lines = 0;
  size_t at = 0;
  // The first row that is not blank.
  while (at < text_.size() && (text_[at] == '\n' || text_[at] == '\r')) {
    if (text_[at] == '\n') ++body_line_;
    ++at;
  }
  if (at >= text_.size()) throw Error(source_ + ": no rows");
  const size_t next = NextRow(at, fields, scratch, lines);
  columns_ = static_cast<int>(fields.size());
  bool header = false;
  for (std::string_view f : fields) header = header || (!f.empty() && !IsNumber(f));
  if (header) {
    for (std::string_view f : fields) header_.emplace_back(f);
    body_ = next;
    body_line_ += lines;
  } else {
    body_ = at;
  }
}

int CsvReader::Column(const std::string& name, const std::string& flag) const {
  if (name == "last") return columns_ - 1;
  if (name == "first") return 0;
  for (size_t c = 0; c < header_.size(); ++c)
    if (header_[c] == name) return static_cast<int>(c);
  int index = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), index);
  if (error == std::errc() && end == name.data() + name.size() && index >= 0 && index < columns_) return index;
  std::string known;
  for (const std::string& h : header_) known += (known.empty() ? "" : ", ") + h;
  throw Error(source_ + ": " + flag + " '" + name + "' is not a column of the table (" +
              (header_.empty() ? "it has no header; give a 0-based index below " + std::to_string(columns_)
                               : "its columns: " + known) +
              ")");
}

std::string CsvReader::ColumnName(int column) const {
  if (static_cast<size_t>(column) < header_.size()) return "'" + header_[static_cast<size_t>(column)] + "'";
  return std::to_string(column);
}

size_t CsvReader::NextRow(size_t at, std::vector<std::string_view>& fields, std::deque<std::string>& scratch,
                          int64_t& lines) const {
  fields.clear();
  scratch.clear();
  lines = 1;
  const size_t n = text_.size();
  while (true) {
    if (at < n && text_[at] == '"') {  // a quoted field: "" is a quote, anything else is itself
      std::string value;
      ++at;
      while (true) {
        if (at >= n) throw Error(source_ + ": a quoted field that starts on line " + std::to_string(body_line_) + " never ends");
        if (text_[at] == '"') {
          if (at + 1 < n && text_[at + 1] == '"') {
            value += '"';
            at += 2;
            continue;
          }
          ++at;
          break;
        }
        if (text_[at] == '\n') ++lines;
        value += text_[at++];
      }
      scratch.push_back(std::move(value));  // a deque: the views of earlier fields stay valid
      fields.emplace_back(scratch.back());
    } else {
      size_t end = at;
      while (end < n && text_[end] != ',' && text_[end] != '\n' && text_[end] != '\r') ++end;
      fields.emplace_back(text_.data() + at, end - at);
      at = end;
    }
    if (at < n && text_[at] == ',') {
      ++at;
      continue;
    }
    if (at < n && text_[at] == '\r') ++at;
    if (at < n && text_[at] == '\n') ++at;
    break;
  }
  return at;
}

void CsvReader::ForEach(const std::function<void(const CsvRow&)>& f) const {
  CsvRow row{this, body_line_, {}};
  std::deque<std::string> scratch;
  size_t at = body_;
  int64_t line = body_line_;
  while (at < text_.size()) {
    if (text_[at] == '\n' || text_[at] == '\r') {  // a blank line
      if (text_[at] == '\n') ++line;
      ++at;
      continue;
    }
    int64_t lines = 0;
    at = NextRow(at, row.fields, scratch, lines);
    row.line = line;
    if (static_cast<int>(row.fields.size()) != columns_)
      throw Error(source_ + ": line " + std::to_string(line) + " has " + std::to_string(row.fields.size()) +
                  " fields, the table " + std::to_string(columns_) + " (ragged rows)");
    f(row);
    line += lines;
  }
}

}  // namespace bptt::formats
