"""Apache Beam wiring of the ComVint method: options, IO, transforms, pipeline, main."""
