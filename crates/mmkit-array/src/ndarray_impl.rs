//! Conversions to [`ndarray`] (feature `ndarray`).
//!
//! [`MmapArray::to_ndarray`] copies and is always safe. Zero-copy views
//! follow the crate's soundness rule: an exclusive owner gets them safely,
//! anyone else through an `unsafe` call.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};

use crate::array::{MmapArray, Order};
use crate::dtype::Element;
use crate::error::{Error, Result};

impl<T: Element> MmapArray<T> {
    fn nd_shape(&self) -> ndarray::Shape<IxDyn> {
        let dim = IxDyn(self.shape());
        dim.set_f(self.order() == Order::Fortran)
    }

    fn nd_error(&self, e: ndarray::ShapeError) -> Error {
        Error::Shape { src: self.src.clone(), shape: self.shape().to_vec(), reason: e.to_string() }
    }

    /// Copies the array into an owned, C-order `ndarray::ArrayD`.
    pub fn to_ndarray(&self) -> Result<ArrayD<T>> {
        let v = self.to_vec()?;
        ArrayD::from_shape_vec(IxDyn(self.shape()), v).map_err(|e| self.nd_error(e))
    }

    /// A zero-copy `ArrayViewD` for an exclusive owner (see
    /// [`MmapArray::data`] for what exclusive means and its limits).
    pub fn as_array_view(&self) -> Result<ArrayViewD<'_, T>> {
        let data = self.data()?;
        ArrayViewD::from_shape(self.nd_shape(), data).map_err(|e| self.nd_error(e))
    }

    /// A zero-copy `ArrayViewMutD` for an exclusive owner.
    pub fn as_array_view_mut(&mut self) -> Result<ArrayViewMutD<'_, T>> {
        let shape = self.nd_shape();
        let shape_vec = self.shape().to_vec();
        let src = self.src.clone();
        let data = self.data_mut()?;
        ArrayViewMutD::from_shape(shape, data).map_err(|e| Error::Shape {
            src,
            shape: shape_vec,
            reason: e.to_string(),
        })
    }

    /// A zero-copy `ArrayViewD` without a lock.
    ///
    /// # Safety
    ///
    /// As for [`MmapArray::data_unchecked`]: nobody may write the data or
    /// truncate the file while the view lives.
    pub unsafe fn as_array_view_unchecked(&self) -> Result<ArrayViewD<'_, T>> {
        // SAFETY: the caller upholds `data_unchecked`'s contract.
        let data = unsafe { self.data_unchecked()? };
        ArrayViewD::from_shape(self.nd_shape(), data).map_err(|e| self.nd_error(e))
    }

    /// A zero-copy `ArrayViewMutD` without a lock.
    ///
    /// # Safety
    ///
    /// As for [`MmapArray::data_mut_unchecked`].
    pub unsafe fn as_array_view_mut_unchecked(&mut self) -> Result<ArrayViewMutD<'_, T>> {
        let shape = self.nd_shape();
        let shape_vec = self.shape().to_vec();
        let src = self.src.clone();
        // SAFETY: the caller upholds `data_mut_unchecked`'s contract.
        let data = unsafe { self.data_mut_unchecked()? };
        ArrayViewMutD::from_shape(shape, data).map_err(|e| Error::Shape {
            src,
            shape: shape_vec,
            reason: e.to_string(),
        })
    }
}
