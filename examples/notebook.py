# %% [markdown]
# # CSPN from Python
# A notebook in percent format (Jupyter, VS Code and Spyder open it as cells; `python3` runs it
# whole): load a model, find the garments in photos, draw them, list the landmarks as a table,
# and score the model on annotated data.
#
#     python3 examples/notebook.py MODEL.cspn PHOTO_OR_FOLDER [OUT_DIR]

# %%
import pathlib
import sys

import cspn

model_path, photos_path = sys.argv[1], pathlib.Path(sys.argv[2])
out_dir = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "notebook-out")
out_dir.mkdir(parents=True, exist_ok=True)

model = cspn.load(model_path)
print(model, "categories:", [c["name"] for c in model.schema["categories"]])
print("landmark network:", ", ".join(f"{p['name']} {p['gflops']:.2f} GFLOPs" for p in model.info()["parts"]))

# %% Find the garments, in one call for all the photos.
files = sorted(photos_path.glob("*.jpg"))[:4] if photos_path.is_dir() else [photos_path]
images = [cspn.read_image(str(f)) for f in files]
pipeline = model.pipeline()
found = pipeline.predict(images)

# %% Draw them (in a notebook: plt.imshow(picture[..., ::-1]), the pictures being BGR).
for f, image, garments in zip(files, images, found):
    cspn.write_image(str(out_dir / (f.stem + ".png")), cspn.draw(image, garments))

# %% One row per landmark: the table a data pipeline would hand on (pandas.DataFrame(rows)).
rows = [{"photo": f.name, "garment": i, "category": g["category"], "landmark": name, **point}
        for f, garments in zip(files, found) for i, g in enumerate(garments) for name, point in g["landmarks"].items()]
for row in rows[:12]:
    print(f"{row['photo']:28} {row['category']:6} {row['landmark']:16} x {row['x']:7.1f} y {row['y']:7.1f} "
          f"score {row['score']:.2f}")
print(f"{sum(len(g) for g in found)} garments, {len(rows)} landmarks in {len(files)} photos")
