// cspn._cspn: the C++ library behind `import cspn`, over its public API (cspn/cspn.hpp) alone.
// Images cross as NumPy arrays (H x W x 3 uint8), predictions and metrics as Python dicts with the
// keys of the cspn command's JSON, errors as cspn's exception kinds. The GIL is released while the
// networks run. python/cspn/__init__.py wraps this module into the documented API.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11_json/pybind11_json.hpp>

#include "cspn/cspn.hpp"

namespace py = pybind11;

namespace {

// One line, as the cspn command prints its errors.
std::string one_line(std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  return message;
}

// The exception classes, created once and kept for the life of the interpreter.
struct Errors {
  PyObject* data = nullptr;    // bad input: annotations, model files (exit code 3)
  PyObject* image = nullptr;   // an image that cannot be used (a DataError)
  PyObject* io = nullptr;      // a file that cannot be written or reached (exit code 4)
  PyObject* config = nullptr;  // bad arguments, config keys or values (exit code 2)
};
Errors errors;

PyObject* new_error(py::module_& m, const char* name, PyObject* bases, const char* doc) {
  PyObject* cls = PyErr_NewExceptionWithDoc((std::string("cspn.") + name).c_str(), doc, bases, nullptr);
  if (!cls) throw py::error_already_set();
  m.attr(name) = py::handle(cls);
  return cls;
}

void register_errors(py::module_& m) {
  errors.data = new_error(m, "DataError", PyExc_ValueError, "Malformed or unusable input: annotations, images, model files.");
  errors.image = new_error(m, "ImageError", errors.data, "An image that cannot be decoded or is too large.");
  errors.io = new_error(m, "IoError", PyExc_OSError, "A file or folder that cannot be written or reached.");
  errors.config = new_error(m, "ConfigError", PyExc_ValueError, "A bad argument, config key or value.");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cspn::ImageError& e) {
      PyErr_SetString(errors.image, one_line(e.what()).c_str());
    } catch (const cspn::DataError& e) {
      PyErr_SetString(errors.data, one_line(e.what()).c_str());
    } catch (const cspn::IoError& e) {
      PyErr_SetString(errors.io, one_line(e.what()).c_str());
    } catch (const std::filesystem::filesystem_error& e) {
      PyErr_SetString(errors.io, one_line(e.what()).c_str());
    } catch (const cspn::Interrupted& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, one_line(e.what()).c_str());
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(errors.config, one_line(e.what()).c_str());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, one_line(e.what_without_backtrace()).c_str());
    }
  });
}

// A cv::Mat over the array's pixels where they are C-contiguous BGR (no copy); else a BGR copy.
// The array must stay alive while the Mat is used.
cv::Mat to_bgr(const py::array& image, const std::string& color, const std::string& name) {
  if (color != "bgr" && color != "rgb")
    throw std::invalid_argument("color=" + color + ": expected \"bgr\" (OpenCV) or \"rgb\" (PIL, matplotlib)");
  if (!py::isinstance<py::array_t<std::uint8_t>>(image) || image.dtype().kind() != 'u' || image.itemsize() != 1 ||
      image.ndim() != 3 || image.shape(2) != 3) {
    std::string shape = "(";
    for (py::ssize_t d = 0; d < image.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(image.shape(d));
    shape += image.ndim() == 1 ? ",)" : ")";
    throw std::invalid_argument(name + ": expected a uint8 array of shape (height, width, 3), got " +
                                std::string(py::str(image.dtype())) + " of shape " + shape);
  }
  if (image.shape(0) == 0 || image.shape(1) == 0) throw std::invalid_argument(name + ": the image is empty");
  const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
  const auto contiguous = image.flags() & py::array::c_style;
  cv::Mat view;
  py::array_t<std::uint8_t, py::array::c_style> dense;
  if (contiguous) {
    view = cv::Mat(h, w, CV_8UC3, const_cast<void*>(image.data()));
  } else {
    dense = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>::ensure(image);
    view = cv::Mat(h, w, CV_8UC3, dense.mutable_data()).clone();
  }
  if (color == "rgb") {
    cv::Mat bgr;
    cv::cvtColor(view, bgr, cv::COLOR_RGB2BGR);
    return bgr;
  }
  return view;
}

// An H x W x 3 uint8 array that owns `bgr`'s pixels (no copy).
py::array to_array(cv::Mat bgr) {
  if (!bgr.isContinuous()) bgr = bgr.clone();
  auto* owner = new cv::Mat(std::move(bgr));
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<cv::Mat*>(p); });
  return py::array_t<std::uint8_t>({owner->rows, owner->cols, 3},
                                   {static_cast<py::ssize_t>(owner->step[0]), static_cast<py::ssize_t>(3), static_cast<py::ssize_t>(1)},
                                   owner->data, free_when_done);
}

struct Model {
  std::string path;
  std::shared_ptr<const cspn::ModelFile> file;
};

// A pipeline and the lock that lets threads share it (cspn::Pipeline takes one caller at a time).
struct Pipeline {
  std::shared_ptr<const cspn::ModelFile> file;
  std::unique_ptr<cspn::Pipeline> pipeline;
  std::unique_ptr<std::mutex> busy = std::make_unique<std::mutex>();
  nlohmann::json last_timings;  // the last predict call's, in the C++ library
};

py::list predict(Pipeline& self, const std::vector<py::array>& images, const std::string& color,
                 std::optional<float> min_score, int max_garments, std::optional<bool> flip) {
  if (max_garments < 0) throw std::invalid_argument("max_garments=" + std::to_string(max_garments) + ": expected 0 (all) or more");
  if (min_score && !(*min_score >= 0 && *min_score <= 1))
    throw std::invalid_argument("min_score=" + std::to_string(*min_score) + ": expected a number from 0 to 1");
  std::vector<cv::Mat> bgr;
  for (size_t i = 0; i < images.size(); ++i) bgr.push_back(to_bgr(images[i], color, "images[" + std::to_string(i) + "]"));
  const std::vector<cspn::PredictOptions> options{cspn::PredictOptions{min_score, max_garments, flip}};
  std::vector<std::vector<cspn::GarmentPrediction>> garments;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(*self.busy);
    cspn::PredictTimings timings;
    const auto start = std::chrono::steady_clock::now();
    garments = self.pipeline->predict(bgr, options, &timings);
    self.last_timings = {
        {"predict_ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count()},
        {"detector_ms", timings.detector_ms}, {"landmarks_ms", timings.landmarks_ms}, {"crops", timings.crops}};
  }
  py::list out;
  const cspn::LandmarkSchema& schema = self.pipeline->schema();
  for (const auto& per_image : garments) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& g : per_image) list.push_back(cspn::garment_json(g, schema));
    out.append(py::object(list));
  }
  return out;
}

py::array draw(const py::array& image, const nlohmann::json& garments, const nlohmann::json& schema_json,
               const std::string& color) {
  const cspn::LandmarkSchema schema = cspn::LandmarkSchema::from_json(schema_json);
  cv::Mat canvas = to_bgr(image, color, "image").clone();
  std::vector<cspn::GarmentPrediction> parsed;
  for (const auto& g : garments) parsed.push_back(cspn::garment_from_json(g, schema));
  cspn::render_garments(canvas, parsed, schema);
  if (color == "rgb") cv::cvtColor(canvas, canvas, cv::COLOR_BGR2RGB);
  return to_array(canvas);
}

nlohmann::json evaluate(const std::string& model, const std::string& data, const std::string& format,
                        const std::string& split, const std::string& boxes, const std::vector<std::string>& sets,
                        const std::string& device, bool skip_bad) {
  cspn::EvalCommand cmd;
  cmd.model = model;
  cmd.data = data;
  cmd.format = format;
  cmd.split = split;
  cmd.sets = sets;
  cmd.skip_bad = skip_bad;
  cmd.options.boxes = boxes;
  cmd.options.device = device;
  cmd.options.progress = false;
  py::gil_scoped_release release;
  std::ostringstream table;
  return cspn::evaluate_command(cmd, table).metrics;
}

// Trains; each log record goes to on_record (with the GIL held). Ctrl-C (SIGINT) is noticed
// between iterations: the run stops with its checkpoint written and KeyboardInterrupt is raised.
std::string train(const std::string& config, const std::string& data, const std::string& format,
                  const std::string& out, bool resume, const std::vector<std::string>& sets, const std::string& device,
                  bool skip_bad, const std::string& unlabelled,
                  const std::function<void(const nlohmann::json&)>& on_record) {
  cspn::TrainCommand cmd;
  cmd.config = config;
  cmd.unlabelled = unlabelled;
  cmd.sets = sets;
  cmd.data = data;
  cmd.format = format;
  cmd.skip_bad = skip_bad;
  cmd.options.out_dir = out;
  cmd.options.device = device;
  cmd.options.resume = resume;
  cmd.options.progress = false;
  std::exception_ptr callback_error;
  bool interrupted = false;  // Ctrl-C, seen by the signal check or inside the callback
  if (on_record)
    cmd.options.on_record = [&](const nlohmann::json& record) {
      py::gil_scoped_acquire gil;
      try {
        on_record(record);
      } catch (py::error_already_set& e) {
        if (e.matches(PyExc_KeyboardInterrupt))
          interrupted = true;
        else if (!callback_error)
          callback_error = std::current_exception();
      }
    };
  cmd.options.stop_requested = [&] {
    py::gil_scoped_acquire gil;
    if (callback_error || interrupted) return true;
    if (PyErr_CheckSignals() == 0) return false;
    PyErr_Clear();  // a KeyboardInterrupt: train() stops and throws cspn::Interrupted
    return true;
  };
  std::string model_path;
  try {
    py::gil_scoped_release release;
    model_path = cspn::train_command(cmd).model_path;
  } catch (const cspn::Interrupted&) {
    if (callback_error) std::rethrow_exception(callback_error);
    throw;
  }
  if (callback_error) std::rethrow_exception(callback_error);  // raised after the last iteration
  if (interrupted) {
    PyErr_SetString(PyExc_KeyboardInterrupt, ("Ctrl-C after the last iteration: the run finished, " + model_path).c_str());
    throw py::error_already_set();
  }
  return model_path;
}

}  // namespace

PYBIND11_MODULE(_cspn, m) {
  m.doc() = "The C++ library behind the cspn package (use `import cspn`).";
  register_errors(m);
  cspn::use_threads(0);

  py::class_<Model>(m, "Model")
      .def_readonly("path", &Model::path)
      .def_property_readonly("schema", [](const Model& self) { return self.file->schema.to_json(); })
      .def_property_readonly("config", [](const Model& self) { return self.file->config.to_json(); })
      .def_property_readonly("extra", [](const Model& self) { return self.file->extra; })
      .def("costs", [](const Model& self) { return cspn::landmark_costs(self.file->config, self.file->schema); });
  m.def("load", [](const std::string& path) {
    return Model{path, std::make_shared<const cspn::ModelFile>(cspn::load_model_file(path))};
  }, py::arg("path"));

  py::class_<Pipeline>(m, "Pipeline")
      .def(py::init([](const Model& model, const std::string& device) {
             Pipeline p;
             p.file = model.file;
             p.pipeline = std::make_unique<cspn::Pipeline>(*model.file, cspn::parse_device(device));
             return p;
           }),
           py::arg("model"), py::arg("device") = "cpu")
      .def("predict", &predict, py::arg("images"), py::arg("color") = "bgr", py::arg("min_score") = py::none(),
           py::arg("max_garments") = 0, py::arg("flip") = py::none())
      .def_property_readonly("min_score", [](const Pipeline& self) { return self.pipeline->min_score(); })
      .def_property_readonly("last_timings", [](const Pipeline& self) { return self.last_timings; })
      .def_property_readonly("schema", [](const Pipeline& self) { return self.pipeline->schema().to_json(); });

  m.def("read_image", [](const std::string& path) {
    cv::Mat image;
    {
      py::gil_scoped_release release;
      image = cspn::read_image(path);
    }
    return to_array(std::move(image));
  }, py::arg("path"));
  m.def("decode_image", [](const py::bytes& data, const std::string& name) {
    const std::string bytes = data;
    cv::Mat image;
    {
      py::gil_scoped_release release;
      image = cspn::decode_image(bytes, name);
    }
    return to_array(std::move(image));
  }, py::arg("data"), py::arg("name") = "bytes");
  m.def("write_image", [](const std::string& path, const py::array& image, const std::string& color) {
    const cv::Mat bgr = to_bgr(image, color, "image");
    py::gil_scoped_release release;
    cspn::write_image(path, bgr);
  }, py::arg("path"), py::arg("image"), py::arg("color") = "bgr");
  m.def("draw", &draw, py::arg("image"), py::arg("garments"), py::arg("schema"), py::arg("color") = "bgr");
  m.def("evaluate", &evaluate, py::arg("model"), py::arg("data"), py::arg("format"), py::arg("split"), py::arg("boxes"),
        py::arg("sets"), py::arg("device"), py::arg("skip_bad"));
  m.def("train", &train, py::arg("config"), py::arg("data"), py::arg("format"), py::arg("out"), py::arg("resume"),
        py::arg("sets"), py::arg("device"), py::arg("skip_bad"), py::arg("unlabelled"), py::arg("on_record"));
  m.def("data_formats", &cspn::data_format_names);
}
