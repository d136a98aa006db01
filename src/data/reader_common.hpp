#pragma once
// Helpers shared by the dataset readers (readers.cpp and one file per format). Internal.
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cspn/data/readers.hpp"

namespace cspn::data_detail {

// "file:line", the prefix of every message about one record.
std::string at(const std::string& file, std::size_t line);
// Throws DataError("<where>: <what>").
[[noreturn]] void fail(const std::string& where, const std::string& what);

// Whole-token number parsing, locale independent: "12.5" ok, "12.5px" / "" / "nan" rejected.
bool parse_number(std::string_view token, double& out);
// As parse_number, but throws naming `where` and the field when the token is not a number.
double number(std::string_view token, const std::string& where, const std::string& field);
// A number that must be a whole value in [lo, hi] (visibility flags, category codes).
int whole_number(std::string_view token, const std::string& where, const std::string& field, int lo, int hi);

std::vector<std::string_view> split_whitespace(std::string_view line);
std::vector<std::string_view> split_char(std::string_view line, char sep);

// The header row of a comma-separated file (line 1 of `file`): column index by name. Keeps views
// into `line`, which must outlive it.
class CsvHeader {
 public:
  // Throws DataError naming a column listed twice.
  CsvHeader(const std::string& file, std::string_view line);
  std::size_t size() const { return names_.size(); }
  std::string_view operator[](std::size_t i) const { return names_[i]; }
  // Throws DataError "FILE:1: missing column 'NAME'", followed by `hint` when given.
  std::size_t column(const std::string& name, const std::string& hint = "") const;

 private:
  std::string file_;
  std::vector<std::string_view> names_;
  std::unordered_map<std::string_view, std::size_t> index_;
};

// A CSV file's lines and its header row (the first line): `path` is the file or a folder holding
// exactly one *.csv. Throws DataError naming the file when it is empty.
struct CsvTable {
  std::string file;
  std::vector<std::string> lines;
  CsvHeader header;  // views lines[0], which stays in place while the table lives
  CsvTable(const CsvTable&) = delete;  // a copy's header would view the original's lines
  CsvTable& operator=(const CsvTable&) = delete;
};
CsvTable read_csv_table(const std::string& path);

// Mirrors `g` where the file's left is the garment's own (ReadOptions::garment_left), then adds it
// to `s`.
void add_garment(Sample& s, Garment g, const LandmarkSchema& schema, const ReadOptions& opt);
// finish_sample, then the sample joins `data`.
void add_sample(Dataset& data, Sample s, const ReadOptions& opt, const std::string& box_where = "");

// A whole JSON file; throws DataError naming it when it cannot be opened or parsed (syntax errors,
// and numbers out of range such as 1e999).
nlohmann::json read_json_file(const std::string& path);

// COCO's keypoint visibility (2 visible, 1 occluded, 0 unlabelled, as DeepFashion2 writes it too);
// false for any other value.
bool coco_visibility(double v, Visibility& out);
// The inverse, for writers: 2, 1 or 0.
int coco_visibility(Visibility v);

// `image` relative to `root` ("img/000001.jpg"), as annotation files name it; throws
// std::invalid_argument when it does not lie under root.
std::string relative_image(const std::string& root, const std::string& image);

// "1 upper, 2 lower, 3 full": the schema's categories with their ids where they have them.
std::string category_list(const LandmarkSchema& schema);

// Lines of a text file without their line ends; throws DataError naming the path when it cannot
// be opened. Line i of the file is element i-1.
std::vector<std::string> read_lines(const std::string& path);

// `path` itself when it is a file, else the only *.<ext> file in the folder `path`; throws
// DataError when there is none or several.
std::string file_or_only_child(const std::string& path, const std::string& ext);

// Swaps each slot with its flip partner: labels written from the garment's own view become
// image-left/right.
void mirror_left_right(Garment& g, const LandmarkSchema& schema);

// Completes and checks a parsed sample: with opt.check_images reads the image header (missing or
// corrupt file, size disagreeing with an annotated width/height); then, when the size is known,
// boxes must lie in the image (1 px tolerance) and labelled keypoints must not be far outside it.
// Boxes must be non-empty and keypoints of slots the category lacks Absent in any case.
// `box_where`: where the boxes were read, when not at s.where (FLD keeps them in list_bbox.txt).
void finish_sample(Sample& s, const LandmarkSchema& schema, const ReadOptions& opt, const std::string& box_where = "");

// Runs fn(); a DataError it throws propagates, or with opt.skip_bad is recorded in
// data.skipped. Returns whether fn completed.
template <class Fn>
bool guarded(const ReadOptions& opt, Dataset& data, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const DataError& e) {
    if (!opt.skip_bad) throw;
    data.skipped.emplace_back(e.what());
    return false;
  }
}

// Runs row(where, line index, fields) for each non-blank data row of `table`, guarded, once the row
// has the header's number of comma-separated fields; else the error says "expected N `unit`, got M".
template <class Fn>
void for_each_csv_row(const CsvTable& table, const ReadOptions& opt, Dataset& data, const std::string& unit, Fn&& row) {
  for (std::size_t i = 1; i < table.lines.size(); ++i) {
    if (table.lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    guarded(opt, data, [&] {
      const std::string where = at(table.file, i + 1);
      const auto fields = split_char(table.lines[i], ',');
      if (fields.size() != table.header.size())
        fail(where, "expected " + std::to_string(table.header.size()) + " " + unit + ", got " + std::to_string(fields.size()));
      row(where, i, fields);
    });
  }
}

}  // namespace cspn::data_detail
